import NIOCore
import NIOWebSocket

/// RFC 6455's rules for a client's frames that NIO's frame decoder and WebSocketKit leave unchecked, between the
/// two: a frame that breaks one fails the connection with close 1002 (a close reason that is not UTF-8, 1007), and
/// nothing after it is read.
///
/// - Every frame from a client is masked (5.1).
/// - No reserved bit is set, since no extension is agreed (5.2).
/// - No reserved opcode (3-7, 11-15) is used (5.2).
/// - A close frame's payload is empty, or a code that may be sent (7.4) and a UTF-8 reason (5.5.1).
/// - A text message is UTF-8 (8.1), checked whole once its last fragment comes: 1007 otherwise.
///
/// Without it, an unmasked or reserved-bit frame was read as a message, a reserved opcode went unanswered with
/// the connection left open, and a close with an invalid code was echoed back.
final class WebSocketFrameGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private var failed = false
    /// The fragments so far of a text message that has not ended.
    private var text: ByteBuffer?
    /// Past this a message is WebSocketKit's to refuse (1009), and it is not gathered here.
    private let largestMessage: Int

    init(largestMessage: Int) {
        self.largestMessage = largestMessage
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        let frame = unwrapInboundIn(data)
        if let code = Self.violation(of: frame) ?? textViolation(of: frame) {
            fail(with: code, context: context)
            return
        }
        context.fireChannelRead(data)
    }

    /// 1007 when a text message ends and is not UTF-8.
    private func textViolation(of frame: WebSocketFrame) -> WebSocketErrorCode? {
        switch frame.opcode {
        case .text:
            text = frame.unmaskedData
        case .continuation where text != nil:
            var more = frame.unmaskedData
            text!.writeBuffer(&more)
        default:
            return nil
        }
        if let gathered = text, gathered.readableBytes > largestMessage { text = nil }
        guard frame.fin, let message = text else { return nil }
        text = nil
        return String(validating: message.readableBytesView, as: UTF8.self) == nil ? .dataInconsistentWithMessage : nil
    }

    /// The close code a frame calls for, or nil when it keeps the rules.
    static func violation(of frame: WebSocketFrame) -> WebSocketErrorCode? {
        if frame.maskKey == nil || frame.rsv1 || frame.rsv2 || frame.rsv3 { return .protocolError }
        switch frame.opcode {
        case .continuation, .text, .binary, .ping, .pong:
            return nil
        case .connectionClose:
            var payload = frame.unmaskedData
            guard payload.readableBytes > 0 else { return nil }
            guard let code = payload.readInteger(as: UInt16.self), mayBeSent(code) else { return .protocolError }
            return String(validating: payload.readableBytesView, as: UTF8.self) == nil ? .dataInconsistentWithMessage : nil
        default:
            return .protocolError
        }
    }

    /// The codes an endpoint may put in a close frame: the defined ones except those reserved for reporting
    /// (1004-1006, 1015), and the ranges for libraries and applications.
    private static func mayBeSent(_ code: UInt16) -> Bool {
        (1000...1003).contains(code) || (1007...1014).contains(code) || (3000...4999).contains(code)
    }

    private func fail(with code: WebSocketErrorCode, context: ChannelHandlerContext) {
        failed = true
        var payload = context.channel.allocator.buffer(capacity: 2)
        payload.write(webSocketErrorCode: code)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: payload))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}
