import Foundation
import StewardFormats

/// Who may see which event: the one rule behind the event log API, SSE and WebSocket streams, and webhook
/// deliveries.
enum EventVisibility {
    /// Admins see every event; others see events about what they own, and catalogue events with skills:read.
    static func may(_ userID: UUID, grants: Grants, see event: Event) -> Bool {
        may(userID, grants: grants, resourceType: event.resourceType, owner: owner(of: event))
    }

    /// The same rule, for an event whose owner was worked out already (streams check it once per subscriber), or
    /// is worked out only when the rule needs it.
    static func may(_ userID: UUID, grants: Grants, resourceType: String, owner: @autoclosure () -> UUID?) -> Bool {
        if grants.permissions.contains(.adminFull) { return true }
        if resourceType == "skill" { return grants.permissions.contains(.skillsRead) }
        if resourceType == "workflow" { return grants.permissions.contains(.workflowsRead) }
        guard let owner = owner() else { return false }
        return owner == userID
    }

    /// The user an event is about: the user itself, or its data's `userId`. Read with `UUID(text:)`, without the C
    /// scanner, since this runs for every event the hub and the dispatcher read.
    static func owner(of event: Event) -> UUID? {
        owner(resourceType: event.resourceType, resourceID: event.resourceID, data: event.data)
    }

    /// The same, from an event's resource and its stored data.
    static func owner(resourceType: String, resourceID: String?, data: String) -> UUID? {
        if resourceType == "user" { return resourceID.flatMap(UUID.init(text:)) }
        guard case .object(let fields) = JSONValue.parse(data) else { return nil }
        return (fields["userId"]?.stringValue).flatMap(UUID.init(text:))
    }
}
