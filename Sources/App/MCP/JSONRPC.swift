import NIOCore
import StewardFormats
import Vapor

/// A JSON-RPC 2.0 request id. MCP allows a string or an integer, never null.
enum JSONRPCID: Sendable, Hashable {
    case string(String)
    case number(Int64)

    /// The longest string id accepted: an id is echoed back and stored with the execution a call makes.
    static let maxLength = 200

    var json: JSONValue {
        switch self {
        case .string(let text): .string(text)
        case .number(let value): .number(Double(value))
        }
    }

    /// As stored on an execution (`mcp_request_id`): `1` and `"1"` are different ids.
    var stored: String {
        switch self {
        case .string(let text): "s:" + text
        case .number(let value): "n:\(value)"
        }
    }
}

/// A JSON-RPC error as MCP answers it, with the HTTP status the Streamable HTTP transport gives it.
struct JSONRPCError: Error, Sendable {
    var code: Int
    var message: String
    var data: JSONValue? = nil
    var status: HTTPResponseStatus = .ok
    /// Extra response headers (`WWW-Authenticate` on 401 and 403).
    var headers: HTTPHeaders = [:]

    static func parse(_ message: String = "The body is not one JSON text.") -> JSONRPCError {
        JSONRPCError(code: -32700, message: message, status: .badRequest)
    }

    static func invalidRequest(_ message: String) -> JSONRPCError {
        JSONRPCError(code: -32600, message: message, status: .badRequest)
    }

    static func methodNotFound(_ method: String, status: HTTPResponseStatus = .ok) -> JSONRPCError {
        JSONRPCError(code: -32601, message: "Method not found: \(method)", status: status)
    }

    static func invalidParams(_ message: String, data: JSONValue? = nil, status: HTTPResponseStatus = .ok) -> JSONRPCError {
        JSONRPCError(code: -32602, message: message, data: data, status: status)
    }

    static func internalError(_ message: String = "The server could not answer; the request id is in the logs.") -> JSONRPCError {
        JSONRPCError(code: -32603, message: message, status: .internalServerError)
    }

    /// 2026-07-28: the headers do not match the body, or a required header is missing.
    static func headerMismatch(_ message: String) -> JSONRPCError {
        JSONRPCError(code: -32020, message: "Header mismatch: " + message, status: .badRequest)
    }

    static func unsupportedVersion(_ requested: String) -> JSONRPCError {
        JSONRPCError(code: -32022, message: "Unsupported protocol version: \(requested)",
                     data: ["supported": .array(MCPVersion.all.map(JSONValue.string)), "requested": .string(requested)],
                     status: .badRequest)
    }

    var json: JSONValue {
        var object: [String: JSONValue] = ["code": .number(Double(code)), "message": .string(message)]
        if let data { object["data"] = data }
        return .object(object)
    }
}

/// One JSON-RPC message from a client: a request (with an id) or a notification.
struct JSONRPCMessage: Sendable {
    var id: JSONRPCID?
    var method: String
    var params: [String: JSONValue]

    var isNotification: Bool { id == nil }

    /// `params._meta`, or empty.
    var meta: [String: JSONValue] {
        if case .object(let meta)? = params["_meta"] { return meta }
        return [:]
    }

    /// A response from the client (to a request the server sent): Steward sends none, so it is ignored.
    struct ClientResponse: Error {}

    /// Reads a POST body. Throws `JSONRPCError` (parse error, invalid request, batch) or `ClientResponse`.
    /// The id, when it can be read, is handed back in `id` so the error answers it.
    static func read(_ body: ByteBuffer?, id: inout JSONRPCID?) throws -> JSONRPCMessage {
        guard let body, body.readableBytes > 0 else { throw JSONRPCError.parse("The body is empty; send one JSON-RPC message.") }
        guard let value = JSONText.parse(body) else { throw JSONRPCError.parse() }
        guard case .object(let fields) = value else {
            if case .array = value {
                throw JSONRPCError.invalidRequest("Batches are not supported: send one JSON-RPC message per request.")
            }
            throw JSONRPCError.invalidRequest("A JSON-RPC message is a JSON object.")
        }
        if let raw = fields["id"] { id = try readID(raw) }
        // The API's rule for text (`NULCharacter`), as a JSON-RPC error.
        if NULCharacter.isIn(value) { throw JSONRPCError.invalidRequest(NULCharacter(place: "The message").reason) }
        guard fields["jsonrpc"] == .string("2.0") else { throw JSONRPCError.invalidRequest("jsonrpc must be \"2.0\".") }
        guard let methodValue = fields["method"] else {
            if fields["result"] != nil || fields["error"] != nil { throw ClientResponse() }
            throw JSONRPCError.invalidRequest("method is missing.")
        }
        guard case .string(let method) = methodValue, !method.isEmpty, method.utf8.count <= 200 else {
            throw JSONRPCError.invalidRequest("method must be a string of 1 to 200 bytes.")
        }
        var params: [String: JSONValue] = [:]
        switch fields["params"] {
        case nil, .null?: break
        case .object(let object)?: params = object
        default: throw JSONRPCError.invalidParams("params must be an object.", status: .badRequest)
        }
        if let meta = params["_meta"] {
            guard case .object = meta else { throw JSONRPCError.invalidParams("params._meta must be an object.", status: .badRequest) }
        }
        return JSONRPCMessage(id: id, method: method, params: params)
    }

    private static func readID(_ raw: JSONValue) throws -> JSONRPCID {
        switch raw {
        case .string(let text):
            guard text.utf8.count <= JSONRPCID.maxLength else {
                throw JSONRPCError.invalidRequest("id is longer than \(JSONRPCID.maxLength) bytes.")
            }
            return .string(text)
        case .number(let number):
            // Integers only, within what a double holds exactly.
            guard number == number.rounded(), abs(number) <= 9_007_199_254_740_991 else {
                throw JSONRPCError.invalidRequest("id must be a string or an integer of at most 2^53 - 1.")
            }
            return .number(Int64(number))
        default:
            throw JSONRPCError.invalidRequest("id must be a string or an integer.")
        }
    }
}

enum JSONRPCResponse {
    /// A result message's text.
    static func result(_ id: JSONRPCID?, _ result: JSONValue) -> String {
        text(["jsonrpc": "2.0", "id": id?.json ?? .null, "result": result])
    }

    /// An error message's text (id null when the request's id could not be read).
    static func error(_ id: JSONRPCID?, _ error: JSONRPCError) -> String {
        text(["jsonrpc": "2.0", "id": id?.json ?? .null, "error": error.json])
    }

    static func notification(_ method: String, _ params: JSONValue) -> String {
        text(["jsonrpc": "2.0", "method": .string(method), "params": params])
    }

    private static func text(_ value: JSONValue) -> String {
        // Every value here was parsed from a request within the nesting limit, or built by the server.
        (try? value.canonicalString()) ?? #"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"The answer could not be written."}}"#
    }
}
