import Crypto
import Foundation
import Vapor
import StewardFormats

/// Runs a skill hosted elsewhere: POSTs `{executionId, input, callbackUrl, callbackToken}` to the skill's URL.
/// A 2xx JSON answer is the output; 3xx (redirects are never followed) and 4xx are failures the skill reports;
/// 5xx, timeouts and connection errors are infrastructure failures, retried with back-off.
struct HTTPRunner: SkillRunner {
    let client: OutboundHTTP
    let publicURL: String
    let callbackKey: SymmetricKey
    /// Opens the sealed header values the skill stores.
    let secretBox: SecretBox

    func run(_ context: RunContext) async throws -> RunOutcome {
        guard case .object(let settings) = context.settings, case .string(let url)? = settings["url"] else {
            return .failed("the skill's http runner has no url")
        }
        let body: JSONValue = [
            "executionId": .string(context.executionID.lowercasedString),
            "input": context.input,
            "callbackUrl": .string("\(publicURL)/api/v1/executions/\(context.executionID.lowercasedString)/progress"),
            "callbackToken": .string(Self.callbackToken(for: context.executionID, key: callbackKey)),
        ]
        let headers: [String: String]
        do {
            headers = try self.headers(settings)
        } catch {
            return .failed("the skill's header values cannot be opened: \(error)")
        }
        let response: OutboundResponse
        do {
            response = try await client.post(url, json: body, headers: headers, timeout: Self.timeout(settings))
        } catch let error as OutboundError {
            switch error {
            case .blocked, .tooLarge: return .failed(error.description)
            case .unresolvable: throw error
            }
        }
        switch response.status {
        case 200..<300:
            guard response.body.readableBytes > 0 else { return .succeeded(.null) }
            // The strict reader request bodies go through; the nesting limit is the job's (see ExecutionJobs).
            guard let output = JSONText.parse(response.body) else {
                return .failed("the runner answered \(response.status) with a body that is not JSON")
            }
            return .succeeded(output)
        case 300..<400:
            return .failed("the runner answered \(response.status); redirects are not followed")
        case 400..<500:
            return .failed("the runner answered \(response.status): \(response.storableText(prefix: 300))")
        default:
            throw RunnerUnavailable(status: response.status, detail: response.storableText(prefix: 300))
        }
    }

    func undo(_ context: RunContext, output: JSONValue?) async throws -> String {
        guard case .object(let settings) = context.settings, case .string(let url)? = settings["undoUrl"] else {
            return "the skill has no undoUrl; nothing to undo"
        }
        let body: JSONValue = ["executionId": .string(context.executionID.lowercasedString), "input": context.input, "output": output ?? .null]
        let response = try await client.post(url, json: body, headers: try headers(settings), timeout: Self.timeout(settings))
        guard (200..<300).contains(response.status) else {
            throw RunnerUnavailable(status: response.status, detail: response.storableText(prefix: 300))
        }
        return "undoUrl answered \(response.status)"
    }

    /// Valid for one execution only: an HMAC of its id under a server key.
    static func callbackToken(for executionID: UUID, key: SymmetricKey) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Data("execution-callback:\(executionID.lowercasedString)".utf8), using: key)
        return SecureToken.base64URL(Data(mac))
    }

    private func headers(_ settings: [String: JSONValue]) throws -> [String: String] {
        guard case .object(let map)? = settings["headers"] else { return [:] }
        return try secretBox.open(values: map.compactMapValues { $0.stringValue })
    }

    private static func timeout(_ settings: [String: JSONValue]) -> TimeInterval {
        if case .number(let seconds)? = settings["timeoutSeconds"] { return seconds }
        return 30
    }
}

/// The remote runner is down or overloaded: retried.
struct RunnerUnavailable: Error, CustomStringConvertible {
    var status: Int
    var detail: String
    var description: String { "the runner answered \(status): \(detail)" }
}
