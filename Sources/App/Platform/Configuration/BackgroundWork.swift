import Vapor

/// Shared holders for background work, created once before any request can race on `Application.storage`.
enum BackgroundWork {
    static func configure(_ app: Application) {
        app.dummyPasswordHash = DummyPasswordHash()
        app.mailOutboxSignal = MailOutboxSignal()
        let worker = MailOutboxWorker()
        app.mailOutboxWorker = worker
        app.lifecycle.use(worker)
        let clients = OutboundClients()
        app.outboundClients = clients
        app.lifecycle.use(clients)
        app.jobSignal = JobSignal()
        app.runningExecutions = RunningExecutions()
        let workers = JobWorkers()
        app.jobWorkers = workers
        app.lifecycle.use(workers)
        let dispatcher = BackgroundLoop.webhookDispatch()
        app.webhookDispatchWorker = dispatcher
        app.lifecycle.use(dispatcher)
        let config = app.appConfig
        app.eventHub = EventHub(app: app, settings: StreamSettings(
            maxPerUser: config.maxStreamsPerUser, maxTotal: config.maxStreams, bufferEvents: config.streamBufferEvents))
        app.lifecycle.use(EventHubLifecycle())
        // Committed: any event a write made is readable now, so live streams need not wait for their next look.
        let hub = app.eventHub
        app.commitListeners.add { hub.poke() }
        let scheduler = BackgroundLoop.scheduler()
        app.schedulerWorker = scheduler
        app.lifecycle.use(scheduler)
        // The counter flushes at shutdown after its loop has stopped (handlers stop in reverse order).
        let counter = UsageCounter()
        app.usageCounter = counter
        app.lifecycle.use(counter)
        let usageFlush = BackgroundLoop.usageFlush()
        app.usageFlushLoop = usageFlush
        app.lifecycle.use(usageFlush)
        let watcher = BackgroundLoop.settingsWatcher()
        app.settingsWatcher = watcher
        app.lifecycle.use(watcher)
    }

    /// Starts the loops that only a serving process runs.
    static func start(_ app: Application) {
        app.settingsWatcher.start(app)
        app.usageFlushLoop.start(app)
        app.mailOutboxWorker.start(app)
        app.jobWorkers.start(app)
        app.jobNotificationListener?.start(app)
        app.ledgerSequencerLoop?.start(app)
        app.webhookDispatchWorker.start(app)
        app.schedulerWorker.start(app)
        app.sqliteWALLoop?.start(app)
    }
}
