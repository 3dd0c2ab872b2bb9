import Vapor

/// `GET /health/live`.
struct LivenessResponse: Content {
    var status: String
}

/// `GET /health/ready`: the same shape whether ready (200) or not (503).
struct ReadinessResponse: Content {
    var status: String
    var database: String
    var schemaVersion: String?
    var pendingMigrations: Int?
}
