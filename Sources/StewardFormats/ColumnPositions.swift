import Atomics

/// The column names of one result, shared by its rows, and where each name is: what a row read directly (SQLite's
/// and PostgreSQL's) uses to find a column by name.
///
/// Items read their columns in the order they were selected, so a read nearly always finds its column at the
/// position after the one read last, with one comparison of two short names; hashing each name to look it up in the
/// table was 3% of the CPU of a skill list on SQLite. The position is a hint only: any other is looked up. Where a
/// name repeats in a result, the hint is not used, so a name always means its first column.
package final class ColumnPositions: Sendable {
    package let names: [String]
    private let positions: [String: Int]
    private let hinted: Bool
    private let next = ManagedAtomic(0)

    package init(_ names: [String]) {
        self.names = names
        positions = Dictionary(names.enumerated().map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
        hinted = positions.count == names.count
    }

    /// The position of the (first) column named `column`, if any.
    package func position(of column: String) -> Int? {
        let guess = next.load(ordering: .relaxed)
        if hinted, guess < names.count, names[guess] == column { return guess }
        return positions[column]
    }

    /// `position` was read: the next read is expected after it. A test for nil does not call this, so the read of
    /// the same column that follows such a test finds it at once too.
    package func read(_ position: Int) {
        next.store(position + 1, ordering: .relaxed)
    }
}
