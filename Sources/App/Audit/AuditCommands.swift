import Crypto
import Foundation
import SQLKit
import Vapor
import StewardFormats

/// `steward audit verify [--checkpoint FILE] | checkpoint`.
struct AuditCommandGroup: AsyncCommandGroup {
    var help: String { "Inspect the audit trail." }
    var commands: [String: any AnyAsyncCommand] { ["verify": AuditVerifyCommand(), "checkpoint": AuditCheckpointCommand()] }
}

/// Recomputes the keyed chain and names the first broken link; with a checkpoint, also proves the history up to it.
struct AuditVerifyCommand: AsyncCommand {
    struct Signature: CommandSignature {
        @Option(name: "checkpoint", help: "A checkpoint printed by steward audit checkpoint: the history up to it must be intact.")
        var checkpoint: String?
        @Option(name: "public-key", help: "Base64 Ed25519 public key the checkpoint must be signed with (default: this instance's).")
        var publicKey: String?
        init() {}
    }

    var help: String { "Verify the audit log's keyed hash chain (and a signed checkpoint); exits 1 at the first broken link." }

    func run(using context: CommandContext, signature: Signature) async throws {
        let app = context.application
        var checkpoint: AuditCheckpoint?
        if let path = signature.checkpoint {
            guard let data = FileManager.default.contents(atPath: path),
                  let parsed = try? JSONDecoder.api.decode(AuditCheckpoint.self, from: data)
            else { throw CommandFailure("\(path) is not a checkpoint printed by steward audit checkpoint") }
            let keyText = signature.publicKey ?? app.auditKeys.checkpointPublicKey
            guard let raw = Data(base64Encoded: keyText), let key = try? Curve25519.Signing.PublicKey(rawRepresentation: raw) else {
                throw CommandFailure("--public-key is not a base64 Ed25519 public key")
            }
            // The key in the file is not trusted: whoever forged a checkpoint would sign it with a key of their own.
            guard parsed.isSigned(by: key) else {
                throw CommandFailure("the checkpoint's signature does not verify with \(signature.publicKey == nil ? "this instance's key" : "the given key")")
            }
            checkpoint = parsed
        }
        let result = try await AuditChain.verify(on: try await app.settledLedger(), key: app.auditKeys.chain)
        if let broken = result.firstBroken {
            let id = broken.id.map { " (id \($0.lowercasedString))" } ?? ""
            throw CommandFailure("audit chain broken at entry \(broken.seq)\(id): \(broken.reason); \(result.checked) entries before it are intact")
        }
        if let checkpoint {
            if let problem = try await checkpoint.problem(on: app.db as! any SQLDatabase) {
                throw CommandFailure("the checkpoint at entry \(checkpoint.seq) does not hold: \(problem)")
            }
            context.console.print("audit chain intact: \(result.checked) entries; the history up to the checkpoint at entry \(checkpoint.seq) is unchanged")
        } else {
            context.console.print("audit chain intact: \(result.checked) entries")
        }
    }
}

/// Prints the chain's head, signed, as one JSON line to keep outside the database.
struct AuditCheckpointCommand: AsyncCommand {
    struct Signature: CommandSignature { init() {} }

    var help: String { "Print a signed checkpoint of the audit chain's head (JSON) to store outside the database." }

    func run(using context: CommandContext, signature: Signature) async throws {
        context.console.print(try APIJSON.string(try await AuditCheckpoint.current(context.application)))
    }
}
