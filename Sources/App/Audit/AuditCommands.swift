import Vapor
import StewardFormats

/// `steward audit verify`.
struct AuditCommandGroup: AsyncCommandGroup {
    var help: String { "Inspect the audit trail." }
    var commands: [String: any AnyAsyncCommand] { ["verify": AuditVerifyCommand()] }
}

/// Recomputes the hash chain and names the first broken link.
struct AuditVerifyCommand: AsyncCommand {
    struct Signature: CommandSignature { init() {} }

    var help: String { "Verify the audit log's SHA-256 hash chain; exits 1 at the first broken link." }

    func run(using context: CommandContext, signature: Signature) async throws {
        let result = try await AuditChain.verify(on: context.application.db)
        if let broken = result.firstBroken {
            let id = broken.id.map { " (id \($0.lowercasedString))" } ?? ""
            throw CommandFailure("audit chain broken at entry \(broken.seq)\(id): \(broken.reason); \(result.checked) entries before it are intact")
        }
        context.console.print("audit chain intact: \(result.checked) entries")
    }
}
