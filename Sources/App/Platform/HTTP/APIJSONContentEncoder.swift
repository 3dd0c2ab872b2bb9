import StewardFormats
import Vapor

/// `APIJSON` as the JSON encoder of Vapor's content system, so every `Content` response is written by it.
struct APIJSONContentEncoder: ContentEncoder {
    func encode<E: Encodable>(_ encodable: E, to body: inout ByteBuffer, headers: inout HTTPHeaders) throws {
        try encode(encodable, to: &body, headers: &headers, userInfo: [:])
    }

    func encode<E: Encodable>(_ encodable: E, to body: inout ByteBuffer, headers: inout HTTPHeaders,
                              userInfo: [CodingUserInfoKey: any Sendable]) throws {
        headers.contentType = .json
        body.writeBytes(try APIJSON.encode(encodable, userInfo: userInfo))
    }
}
