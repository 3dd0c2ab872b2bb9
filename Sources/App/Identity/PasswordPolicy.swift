import Foundation

/// The rules a new password must meet; each broken rule is one field problem.
public enum PasswordPolicy {
    public static let minimumLength = 8
    public static let maximumLength = 128

    /// The 10,000 most common passwords (zxcvbn's ranked list, MIT), lower-cased.
    static let common: Set<String> = Set(EmbeddedResources.commonPasswords.split(separator: "\n").map { $0.lowercased() })

    /// `minimumLength` is the `accounts.passwordMinLength` setting, never below 8.
    public static func problems(password: String, email: String?, username: String?, field: String = "password",
                                minimumLength: Int = minimumLength) -> [FieldProblem] {
        var problems: [FieldProblem] = []
        let shortest = max(minimumLength, Self.minimumLength)
        if password.count < shortest {
            problems.append(FieldProblem(field: field, message: "must be at least \(shortest) characters"))
        }
        if password.count > maximumLength {
            problems.append(FieldProblem(field: field, message: "must be at most \(maximumLength) characters"))
        }
        let classes = [
            password.contains { $0.isLowercase },
            password.contains { $0.isUppercase },
            password.contains { $0.isNumber },
            password.contains { !$0.isLetter && !$0.isNumber },
        ].filter { $0 }.count
        if classes < 2 {
            problems.append(FieldProblem(field: field, message: "must mix at least two of lower case, upper case, digits and symbols"))
        }
        let lowered = password.lowercased()
        if let email, lowered == email.lowercased() || lowered == email.split(separator: "@").first.map({ $0.lowercased() }) {
            problems.append(FieldProblem(field: field, message: "must not be your email address"))
        }
        if let username, lowered == username.lowercased() {
            problems.append(FieldProblem(field: field, message: "must not be your username"))
        }
        if common.contains(lowered) {
            problems.append(FieldProblem(field: field, message: "is one of the most common passwords"))
        }
        return problems
    }
}
