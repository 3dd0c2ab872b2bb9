import Vapor

/// `steward seed --samples`: adds five sample skills on the built-in runners.
struct SeedCommand: AsyncCommand {
    struct Signature: CommandSignature {
        @Flag(name: "samples", help: "Add the sample skills (existing slugs are left alone).") var samples: Bool
        init() {}
    }

    var help: String { "Add sample data." }

    func run(using context: CommandContext, signature: Signature) async throws {
        guard signature.samples else { throw CommandFailure("say what to seed: steward seed --samples") }
        let added = try await SkillService(app: context.application).seedSamples()
        context.console.print(added.isEmpty ? "The sample skills are already there." : "added \(added.joined(separator: ", "))")
    }
}
