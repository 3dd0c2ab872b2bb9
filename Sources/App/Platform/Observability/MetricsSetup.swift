import Metrics
import Prometheus
import Vapor

/// Points swift-metrics at the application's registry, so metrics that libraries emit through it appear on
/// `/metrics` too; called once by `main` (the metrics system is process-wide, so tests use per-app registries).
public enum MetricsSetup {
    public static func bootstrap(_ app: Application) {
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: app.metrics.registry))
    }
}
