import Fluent
import Foundation

extension QueryBuilder {
    /// The ownership rule, in one place: a caller sees only rows they own, unless they see every owner (admins).
    /// Another owner's id therefore finds nothing, and the route answers 404 exactly as for a missing id.
    func visible(
        to caller: AuthenticatedCaller,
        ownedThrough owner: KeyPath<Model, ParentProperty<Model, User>>
    ) throws -> Self {
        guard !caller.seesEveryOwner else { return self }
        return filter(owner.appending(path: \ParentProperty<Model, User>.$id) == (caller.user.id))
    }
}

extension AuthenticatedCaller {
    /// The same rule for a row already read: whether this caller sees a row owned by `ownerID`.
    func sees(ownedBy ownerID: UUID) -> Bool {
        seesEveryOwner || user.id == ownerID
    }
}
