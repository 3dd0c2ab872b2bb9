import StewardFormats

/// How deep free-form JSON may nest where Steward stores it and sends it on: execution input and output, workflow
/// and schedule input, step outputs (which are executions' outputs). The stored value later sits inside event
/// data, a webhook envelope or a workflow step's input, each a few levels deeper; 64 leaves all of them far below
/// what the canonical writer and the parser read (512).
enum JSONLimits {
    static let maximumNesting = 64

    /// A 422 field problem when `value` nests deeper than `maximumNesting`.
    static func nestingProblem(_ value: JSONValue, field: String) -> FieldProblem? {
        value.exceedsNesting(maximumNesting) ? FieldProblem(field: field, message: "must not be nested more than \(maximumNesting) levels deep") : nil
    }
}
