#!/usr/bin/env python3
"""RFC 9773 (ACME Renewal Information) test stand-in, for tests only.

Debian's pebble 2.4 has no renewalInfo resource. This small HTTPS server
adds the one thing missing and nothing else:

  GET /dir                   pebble's directory, fetched from pebble on each
                             request, with a "renewalInfo" member added that
                             points at this server. Every other URL is left
                             pointing at pebble unchanged, so every JWS-signed
                             request goes to pebble directly and pebble's own
                             url/nonce checks hold.
  GET /renewal-info/<certID> a RenewalInfo object (RFC 9773 4.2):
                             {"suggestedWindow": {"start": RFC 3339,
                              "end": RFC 3339}, "explanationURL": ...}
                             with a Retry-After header. The window is given on
                             the command line as offsets in seconds from the
                             time of the request. Every certID asked for is
                             appended to --log, one per line.

A certID that is not two base64url parts (RFC 4648 section 5, no padding)
separated by "." is answered 400 Bad Request with a problem document
(RFC 7807, type urn:ietf:params:acme:error:malformed, RFC 8555 6.7).
Everything else is 404 with a problem document.

--mode bad-json and --mode reversed answer 200 with a body that is not
JSON, or with a window whose end precedes its start (RFC 9773 4.2: such an
object is invalid and clients treat it as no answer), to test clients.

It serves with the same throwaway TLS certificate as pebble
(tests/integration/pebble.inc.sh: $P/cert.pem, $P/key.pem). Python 3
standard library only.
"""
import argparse
import datetime
import http.server
import json
import re
import ssl
import sys
import urllib.request

B64URL = re.compile(r'^[A-Za-z0-9_-]+$')


def rfc3339(t):
    return t.strftime('%Y-%m-%dT%H:%M:%SZ')


def main():
    ap = argparse.ArgumentParser(description='RFC 9773 renewalInfo stand-in in front of pebble (tests only)')
    ap.add_argument('--listen', default='127.0.0.1', help='address to listen on')
    ap.add_argument('--port', type=int, required=True)
    ap.add_argument('--pebble', required=True, help="pebble's directory URL")
    ap.add_argument('--cacert', required=True, help="trust anchor for pebble's TLS certificate")
    ap.add_argument('--cert', required=True, help='TLS certificate (PEM)')
    ap.add_argument('--key', required=True, help='TLS key (PEM)')
    ap.add_argument('--log', required=True, help='file to append each certID asked for')
    ap.add_argument('--start', type=int, default=0, help='window start, seconds from now')
    ap.add_argument('--end', type=int, default=3600, help='window end, seconds from now')
    ap.add_argument('--retry-after', type=int, default=21600, help='Retry-After seconds')
    ap.add_argument('--explanation-url', default='', help='explanationURL (omitted when empty)')
    ap.add_argument('--mode', choices=['ok', 'bad-json', 'reversed'], default='ok')
    args = ap.parse_args()

    pebble_ctx = ssl.create_default_context(cafile=args.cacert)
    base = 'https://%s:%d' % ('127.0.0.1' if args.listen == '0.0.0.0' else args.listen, args.port)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'

        def send(self, code, body, ctype, headers=()):
            data = body.encode()
            self.send_response(code)
            self.send_header('Content-Type', ctype)
            self.send_header('Content-Length', str(len(data)))
            self.send_header('Cache-Control', 'public, max-age=0, no-cache')
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def problem(self, code, ptype, detail):
            self.send(code, json.dumps({'type': ptype, 'detail': detail, 'status': code}),
                      'application/problem+json')

        def do_GET(self):
            path = self.path.split('?', 1)[0]
            if path == '/dir':
                try:
                    with urllib.request.urlopen(args.pebble, context=pebble_ctx, timeout=5) as r:
                        d = json.load(r)
                except Exception as e:  # pebble down: say so, as a CA would
                    self.problem(503, 'urn:ietf:params:acme:error:serverInternal',
                                 'cannot fetch the directory from pebble: %s' % e)
                    return
                d['renewalInfo'] = base + '/renewal-info'
                self.send(200, json.dumps(d), 'application/json')
                return
            if path.startswith('/renewal-info/'):
                cid = path[len('/renewal-info/'):]
                with open(args.log, 'a') as f:
                    f.write(cid + '\n')
                parts = cid.split('.')
                if len(parts) != 2 or not all(B64URL.match(p) for p in parts):
                    self.problem(400, 'urn:ietf:params:acme:error:malformed',
                                 'certID must be base64url(AKI keyIdentifier) "." base64url(serial)')
                    return
                now = datetime.datetime.now(datetime.timezone.utc)
                start = now + datetime.timedelta(seconds=args.start)
                end = now + datetime.timedelta(seconds=args.end)
                hdr = [('Retry-After', str(args.retry_after))]
                if args.mode == 'bad-json':
                    self.send(200, '{"suggestedWindow": {"start": ', 'application/json', hdr)
                    return
                if args.mode == 'reversed':
                    start, end = end, start
                obj = {'suggestedWindow': {'start': rfc3339(start), 'end': rfc3339(end)}}
                if args.explanation_url:
                    obj['explanationURL'] = args.explanation_url
                self.send(200, json.dumps(obj), 'application/json', hdr)
                return
            self.problem(404, 'about:blank', 'this stand-in serves /dir and /renewal-info/<certID> only')

        def log_message(self, fmt, *a):
            sys.stderr.write('ari-directory: %s\n' % (fmt % a))

    srv = http.server.ThreadingHTTPServer((args.listen, args.port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    sys.stderr.write('ari-directory: listening on %s, window %+d..%+d s, mode %s\n' %
                     (base, args.start, args.end, args.mode))
    sys.stderr.flush()
    srv.serve_forever()


if __name__ == '__main__':
    main()
