"""A small OpenID Connect provider for the browser checks, in plain Python (no package beyond the standard library).

It serves discovery, a JWKS with one RSA key (RS256, published without `alg`, as several providers do), an
authorize endpoint that approves at once as `next_person` and redirects back with a code, and a token endpoint
that checks the client's Basic credentials, the redirect URI and the PKCE S256 verifier before it signs an ID
token with the nonce. The RSA key is made at start with Miller-Rabin primes: slow for Python, quick enough here.
"""
import base64
import hashlib
import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CLIENT_ID = "console-check"
CLIENT_SECRET = "console-check-secret"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def is_probable_prime(n: int, rounds: int = 32) -> bool:
    if n < 2:
        return False
    for small in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % small == 0:
            return n == small
    d, r = n - 1, 0
    while d % 2 == 0:
        d //= 2
        r += 1
    for _ in range(rounds):
        x = pow(secrets.randbelow(n - 3) + 2, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def prime(bits: int) -> int:
    while True:
        candidate = secrets.randbits(bits) | (1 << (bits - 1)) | (1 << (bits - 2)) | 1
        if is_probable_prime(candidate):
            return candidate


class RSAKey:
    def __init__(self, bits: int = 2048):
        e = 65537
        while True:
            p, q = prime(bits // 2), prime(bits // 2)
            phi = (p - 1) * (q - 1)
            if p != q and phi % e != 0:
                break
        self.n, self.e, self.d = p * q, e, pow(e, -1, phi)

    def sign_rs256(self, message: bytes) -> bytes:
        # RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8017 §8.2): 00 01 FF.. 00 DigestInfo hash.
        digest_info = bytes.fromhex("3031300d060960864801650304020105000420") + hashlib.sha256(message).digest()
        length = (self.n.bit_length() + 7) // 8
        encoded = b"\x00\x01" + b"\xff" * (length - len(digest_info) - 3) + b"\x00" + digest_info
        return pow(int.from_bytes(encoded, "big"), self.d, self.n).to_bytes(length, "big")


class FakeOIDC:
    """Runs on 127.0.0.1:port in a thread; `next_person` is who approves the next authorization."""

    def __init__(self, port: int):
        self.issuer = f"http://127.0.0.1:{port}"
        self.key = RSAKey()
        self.grants = {}
        self.next_person = {"sub": "1", "email": "someone@example.com", "email_verified": True, "name": "Some One"}
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status, body=None, headers=()):
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                if url.path == "/.well-known/openid-configuration":
                    self.answer(200, {
                        "issuer": provider.issuer, "authorization_endpoint": provider.issuer + "/authorize",
                        "token_endpoint": provider.issuer + "/token", "jwks_uri": provider.issuer + "/jwks",
                        "id_token_signing_alg_values_supported": ["RS256"], "response_types_supported": ["code"],
                        "subject_types_supported": ["public"], "code_challenge_methods_supported": ["S256"],
                    })
                elif url.path == "/jwks":
                    self.answer(200, {"keys": [{"kty": "RSA", "kid": "rsa-1", "use": "sig",
                                                "n": b64url(int_bytes(provider.key.n)), "e": b64url(int_bytes(provider.key.e))}]})
                elif url.path == "/authorize":
                    if query.get("client_id") != CLIENT_ID or query.get("code_challenge_method") != "S256":
                        self.answer(400, {"error": "invalid_request"})
                        return
                    code = secrets.token_urlsafe(24)
                    provider.grants[code] = {"challenge": query["code_challenge"], "nonce": query.get("nonce"),
                                             "redirect_uri": query["redirect_uri"], "person": dict(provider.next_person)}
                    back = query["redirect_uri"] + "?" + urllib.parse.urlencode({"code": code, "state": query.get("state", "")})
                    self.answer(302, None, [("Location", back)])
                else:
                    self.answer(404, {"error": "not_found"})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                basic = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
                if self.path != "/token" or self.headers.get("Authorization") != basic:
                    self.answer(401, {"error": "invalid_client"})
                    return
                grant = provider.grants.pop(form.get("code", ""), None)
                verifier = form.get("code_verifier", "")
                if (grant is None or form.get("redirect_uri") != grant["redirect_uri"]
                        or b64url(hashlib.sha256(verifier.encode()).digest()) != grant["challenge"]):
                    self.answer(400, {"error": "invalid_grant"})
                    return
                now = int(time.time())
                claims = {"iss": provider.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 300,
                          "nonce": grant["nonce"], **grant["person"]}
                header = {"alg": "RS256", "kid": "rsa-1", "typ": "JWT"}
                signing_input = (b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())).encode()
                token = signing_input.decode() + "." + b64url(provider.key.sign_rs256(signing_input))
                self.answer(200, {"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "id_token": token})

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
