import Crypto
import Foundation
import SQLKit
import StewardFormats
import Vapor

/// The audit chain's head at one moment, signed with this instance's Ed25519 key. Operators keep checkpoints
/// outside the database; `steward audit verify --checkpoint FILE` then proves that the history up to it is still
/// there and unchanged, which the chain alone cannot show after its newest entries were deleted with the head row.
struct AuditCheckpoint: Content, Equatable {
    var seq: Int64
    var hash: String
    var at: Date
    /// Base64 of the raw 32-byte Ed25519 public key that signed it.
    var publicKey: String
    /// Base64 of the Ed25519 signature over `signedText`.
    var signature: String

    /// What is signed: a fixed prefix, the seq, the link and the time in Unix seconds (the API writes whole
    /// seconds), one per line.
    static func signedText(seq: Int64, hash: String, at: Date) -> Data {
        Data("steward-audit-checkpoint:v1\n\(seq)\n\(hash)\n\(Int64(at.timeIntervalSince1970.rounded(.down)))".utf8)
    }

    /// The current head, signed.
    static func current(_ app: Application) async throws -> AuditCheckpoint {
        let sql = try await app.settledLedger() as! any SQLDatabase
        guard let head = try await sql.raw("SELECT seq, last_hash FROM ledger_heads WHERE name = \(bind: LedgerHead.audit)").first() else {
            throw LedgerError.missingHead(LedgerHead.audit)
        }
        let seq = try head.decode(column: "seq", as: Int64.self)
        let hash = try head.decode(column: "last_hash", as: String.self)
        let at = Date(timeIntervalSince1970: app.wallClock.now().timeIntervalSince1970.rounded(.down))
        let signer = app.auditKeys.checkpointSigner
        let signature = try signer.signature(for: signedText(seq: seq, hash: hash, at: at))
        return AuditCheckpoint(seq: seq, hash: hash, at: at, publicKey: app.auditKeys.checkpointPublicKey,
                               signature: Data(signature).base64EncodedString())
    }

    /// Whether `key` signed this checkpoint as it reads.
    func isSigned(by key: Curve25519.Signing.PublicKey) -> Bool {
        guard let signature = Data(base64Encoded: signature) else { return false }
        return key.isValidSignature(signature, for: Self.signedText(seq: seq, hash: hash, at: at))
    }

    /// Why the database's chain does not hold this checkpoint, or nil when the entry it names is there with the
    /// link it names (the chain up to it is checked by `AuditChain.verify`).
    func problem(on database: any SQLDatabase) async throws -> String? {
        if seq == 0 { return nil }
        if let pruned = try await database.raw("SELECT seq, last_hash FROM ledger_heads WHERE name = \(bind: LedgerHead.auditPruned)").first() {
            let prunedSeq = try pruned.decode(column: "seq", as: Int64.self)
            if prunedSeq == seq {
                return try pruned.decode(column: "last_hash", as: String.self) == hash ? nil : "the link at entry \(seq) differs from the checkpoint's"
            }
            if prunedSeq > seq {
                return "entries up to \(prunedSeq) were removed (by retention or by hand), so this checkpoint at entry \(seq) cannot be proven; keep checkpoints newer than the retention window"
            }
        }
        guard let row = try await database.raw("SELECT hash FROM audit_logs WHERE seq = \(bind: seq)").first() else {
            return "entry \(seq), which the checkpoint names, is missing"
        }
        return try row.decode(column: "hash", as: String.self) == hash ? nil : "the link at entry \(seq) differs from the checkpoint's"
    }
}
