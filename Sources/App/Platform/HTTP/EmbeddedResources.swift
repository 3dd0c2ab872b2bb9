/// The files compiled into the binary (`resources` in `Package.swift`), as text.
enum EmbeddedResources {
    /// `openapi.yaml`, the API's contract, served at `/openapi.yaml`.
    static let openAPIDocument = String(decoding: PackageResources.openapi_yaml, as: UTF8.self)
    /// The 10,000 most common passwords (from zxcvbn, MIT), one per line.
    static let commonPasswords = String(decoding: PackageResources.common_passwords_txt, as: UTF8.self)
}
