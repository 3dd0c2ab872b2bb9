import SQLKit

/// True where `text` holds `needle` literally, case as given: `instr(text, ?) > 0` on SQLite, `strpos(text, $1) > 0`
/// on PostgreSQL. Neither has wildcards, so nothing in the needle needs escaping.
///
/// A filter for text inside a column uses this rather than `LIKE` with a bound `%…%` pattern: SQLite prepares a
/// statement whose `LIKE` pattern is a bound value again whenever another value is bound (the pattern might let an
/// index answer a prefix), so a kept statement (the direct readers') was prepared anew for nearly every request,
/// each bringing another text to look for.
struct TextContains: SQLExpression {
    let text: any SQLExpression
    let needle: String

    func serialize(to serializer: inout SQLSerializer) {
        serializer.write(serializer.dialect.name == "postgresql" ? "strpos(" : "instr(")
        text.serialize(to: &serializer)
        serializer.write(", ")
        SQLBind(needle).serialize(to: &serializer)
        serializer.write(") > 0")
    }
}
