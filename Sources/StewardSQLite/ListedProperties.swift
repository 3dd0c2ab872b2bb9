import FluentKit

/// A model that lists its stored properties by hand, so a row can be read into it without Fluent's reflection.
/// Fluent finds a model's properties with `Mirror` on every read, which on the per-request caller lookup cost more
/// than the query itself. A test checks each list against the model's keys, so a new field cannot be missed.
package protocol ListedProperties: Model {
    var listedProperties: [any AnyDatabaseProperty] { get }
}

extension ListedProperties {
    /// What Fluent's `output(from:)` does: each property reads its column, and the model now exists.
    package func hydrate(from output: any DatabaseOutput) throws {
        for property in listedProperties { try property.output(from: output) }
    }
}
