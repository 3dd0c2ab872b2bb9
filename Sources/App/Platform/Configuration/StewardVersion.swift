/// The version of this build of Steward, as outbound requests announce it (`User-Agent`).
enum StewardVersion {
    static let current = "1.0.0"
}
