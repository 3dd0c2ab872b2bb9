import Foundation

/// Decides whether the server may send a request to a URL (HTTP runners now, webhooks later).
///
/// Refused: schemes other than http/https (and http when https-only), URLs with userinfo, non-canonical IPv4
/// spellings (`2130706433`, `0x7f.1`, `127.1`, octal) whatever the allow-list says, `localhost` names, and
/// addresses in loopback, private, link-local, CGNAT, unspecified, multicast, broadcast, documentation and other
/// special-purpose ranges, unless the allow-list names the host or a CIDR containing the address.
/// This is the save-time check on the URL as written; the delivery-time check of resolved addresses uses
/// `isForbidden(address:)` on every address before connecting.
struct OutboundGuard: Sendable {
    /// Hosts and CIDRs that may be reached even though they are special-purpose.
    var allowed: [String]
    var httpsOnly: Bool

    /// Why a URL is refused, or nil when it may be used.
    func refusal(for urlString: String) -> String? {
        guard urlString.utf8.count <= 2048, let components = URLComponents(string: urlString),
              let scheme = components.scheme?.lowercased()
        else { return "is not a valid URL" }
        guard scheme == "https" || scheme == "http" else { return "must use http or https" }
        if httpsOnly, scheme == "http" { return "must use https" }
        guard components.user == nil, components.password == nil else { return "must not contain credentials" }
        guard let rawHost = components.host, !rawHost.isEmpty else { return "must name a host" }
        let host = rawHost.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]"))

        if Self.isNonCanonicalIPv4(host) { return "uses a non-canonical IPv4 address; write it as four decimal numbers" }
        if let address = IPAddress(host) {
            if isForbidden(address: address) { return "targets a private or special-purpose address" }
            return nil
        }
        if host == "localhost" || host.hasSuffix(".localhost") || host.hasSuffix(".local") || host.hasSuffix(".internal") {
            if !allowed.contains(host) { return "targets a local name" }
        }
        return nil
    }

    /// True for special-purpose addresses that the allow-list does not open. An IPv6 address that carries IPv4
    /// addresses (see `IPAddress.embeddedIPv4`) is judged by those: it is forbidden when any of them is.
    func isForbidden(address: IPAddress) -> Bool {
        if isAllowListed(address) { return false }
        if let embedded = address.embeddedIPv4 { return embedded.contains { isForbidden(address: $0) } }
        return address.isSpecialPurpose
    }

    private func isAllowListed(_ address: IPAddress) -> Bool {
        allowed.contains { entry in
            if let cidr = CIDR(entry), cidr.contains(address) { return true }
            return IPAddress(entry) == address
        }
    }

    /// Digits-only hosts, hex or octal parts, or fewer than four parts: forms that resolvers read as IPv4.
    static func isNonCanonicalIPv4(_ host: String) -> Bool {
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        guard !parts.isEmpty, parts.allSatisfy({ !$0.isEmpty }) else { return false }
        let numeric = parts.allSatisfy { part in
            let lower = part.lowercased()
            if lower.hasPrefix("0x") { return lower.count > 2 && lower.dropFirst(2).allSatisfy(\.isHexDigit) }
            return part.allSatisfy(\.isASCIIDigitCharacter)
        }
        guard numeric else { return false }
        if parts.count != 4 { return true }
        return parts.contains { part in
            part.lowercased().hasPrefix("0x") || (part.count > 1 && part.hasPrefix("0")) || (Int(part) ?? 256) > 255
        }
    }
}

/// An IPv4 or IPv6 address as 4 or 16 bytes.
struct IPAddress: Equatable, Sendable {
    var bytes: [UInt8]

    init?(_ text: String) {
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            bytes = withUnsafeBytes(of: &v4) { Array($0) }
        } else if inet_pton(AF_INET6, text, &v6) == 1 {
            bytes = withUnsafeBytes(of: &v6) { Array($0) }
        } else {
            return nil
        }
    }

    init(bytes: [UInt8]) {
        self.bytes = bytes
    }

    var isIPv4: Bool { bytes.count == 4 }

    /// Loopback, private, link-local, CGNAT, unspecified, multicast, broadcast, documentation, benchmarking,
    /// reserved, IPv6 unique-local and link-local; an IPv6 address that carries IPv4 addresses is special when any
    /// of them is.
    var isSpecialPurpose: Bool {
        if isIPv4 {
            return Self.specialIPv4.contains { $0.contains(self) }
        }
        if let embedded = embeddedIPv4 { return embedded.contains(where: \.isSpecialPurpose) }
        return Self.specialIPv6.contains { $0.contains(self) }
    }

    /// The IPv4 addresses an IPv6 address leads to, for the forms that carry them:
    /// IPv4-compatible `::a.b.c.d` (`::/96`, so `::` and `::1` too), IPv4-mapped `::ffff:a.b.c.d`, NAT64
    /// `64:ff9b::a.b.c.d` (RFC 6052), 6to4 `2002:AABB:CCDD::/48` (RFC 3056), and Teredo `2001:0::/32`, which
    /// carries its server's address and its client's, the latter with every bit inverted (RFC 4380 §4).
    /// Nil for IPv4 addresses and other IPv6 addresses.
    var embeddedIPv4: [IPAddress]? {
        guard bytes.count == 16 else { return nil }
        let last = IPAddress(bytes: Array(bytes[12..<16]))
        if bytes[0..<12].allSatisfy({ $0 == 0 }) { return [last] }
        if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff { return [last] }
        if Self.nat64.contains(self) { return [last] }
        if bytes[0] == 0x20, bytes[1] == 0x02 { return [IPAddress(bytes: Array(bytes[2..<6]))] }
        if bytes[0] == 0x20, bytes[1] == 0x01, bytes[2] == 0, bytes[3] == 0 {
            return [IPAddress(bytes: Array(bytes[4..<8])), IPAddress(bytes: bytes[12..<16].map { ~$0 })]
        }
        return nil
    }

    private static let nat64 = CIDR("64:ff9b::/96")!

    static let specialIPv4: [CIDR] = ([
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24",
        "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
        "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
    ] as [String]).compactMap(CIDR.init)

    static let specialIPv6: [CIDR] = ([
        // The forms that carry IPv4 addresses (::/96, ::ffff:0:0/96, 64:ff9b::/96, 2002::/16 and Teredo's
        // 2001::/32) are judged by those addresses before this list is read.
        "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32", "fc00::/7", "fe80::/10", "ff00::/8",
    ] as [String]).compactMap(CIDR.init)
}

/// An address block such as `10.0.0.0/8` or `fc00::/7`.
struct CIDR: Sendable {
    var network: IPAddress
    var prefixLength: Int

    init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
        guard let address = IPAddress(parts[0]) else { return nil }
        let maximum = address.bytes.count * 8
        let length = parts.count == 2 ? Int(parts[1]) : maximum
        guard let length, (0...maximum).contains(length) else { return nil }
        network = address
        prefixLength = length
    }

    func contains(_ address: IPAddress) -> Bool {
        guard address.bytes.count == network.bytes.count else { return false }
        var remaining = prefixLength
        for index in network.bytes.indices where remaining > 0 {
            let bits = min(8, remaining)
            let mask: UInt8 = bits == 8 ? 0xff : ~(0xff >> UInt8(bits))
            if address.bytes[index] & mask != network.bytes[index] & mask { return false }
            remaining -= bits
        }
        return true
    }
}
