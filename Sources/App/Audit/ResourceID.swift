import Foundation
import StewardFormats

/// A resource id as events and audit entries store it: a UUID as lower-case text, anything else as it was given.
/// Filters pass what a client sent through this, so an id matches in whichever case the client spells it.
enum ResourceID {
    static func normalized(_ raw: String) -> String {
        UUID(text: raw)?.lowercasedString ?? raw
    }
}
