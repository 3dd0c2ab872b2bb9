import Crypto
import Foundation
import Vapor

/// bcrypt, off the event loop, over a SHA-256 pre-hash of the password.
///
/// bcrypt reads only the first 72 bytes of its input, so two long passwords that share a 72-byte prefix
/// would be accepted as equal. Hashing the password with SHA-256 first (base64, 44 bytes) gives bcrypt a
/// fixed-length input that depends on every byte, so passwords up to the policy's 128 characters are
/// compared in full.
public struct PasswordHasher: Sendable {
    let cost: Int
    let threadPool: NIOThreadPool

    public init(cost: Int, threadPool: NIOThreadPool) {
        self.cost = cost
        self.threadPool = threadPool
    }

    static func prehash(_ password: String) -> String {
        Data(SHA256.hash(data: Data(password.utf8))).base64EncodedString()
    }

    public func hash(_ password: String) async throws -> String {
        let cost = self.cost
        return try await threadPool.runIfActive { try Bcrypt.hash(Self.prehash(password), cost: cost) }
    }

    public func verify(_ password: String, against hash: String) async throws -> Bool {
        // `User.noPassword` and anything else that is not a bcrypt hash matches nothing.
        guard hash.hasPrefix("$2") else { return false }
        return try await threadPool.runIfActive { try Bcrypt.verify(Self.prehash(password), created: hash) }
    }

    /// True when the stored hash was made at another cost than the configured one.
    public func needsRehash(_ hash: String) -> Bool {
        // "$2b$12$..." — the cost is the third field.
        let parts = hash.split(separator: "$")
        guard parts.count >= 2, let stored = Int(parts[1]) else { return true }
        return stored != cost
    }
}
