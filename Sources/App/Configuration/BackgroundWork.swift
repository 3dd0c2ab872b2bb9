import Vapor

/// Shared holders for background work, created once before any request can race on `Application.storage`.
enum BackgroundWork {
    static func configure(_ app: Application) {
        app.dummyPasswordHash = DummyPasswordHash()
        app.mailOutboxSignal = MailOutboxSignal()
        let worker = MailOutboxWorker()
        app.mailOutboxWorker = worker
        app.lifecycle.use(worker)
    }

    /// Starts the loops that only a serving process runs.
    static func start(_ app: Application) {
        app.mailOutboxWorker.start(app)
    }
}
