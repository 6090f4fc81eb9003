#!/usr/bin/env python3
"""EST simpleenroll bound to its TLS session (RFC 7030 3.5), for est.sh.

Opens one TLS 1.2 connection with Python's ssl module (OpenSSL), reads the
session's tls-unique channel binding (RFC 5929) from it, has openssl req make
a P-256 CSR whose challengePassword is base64(tls-unique), and POSTs that CSR
as simpleenroll with http.client on the same connection, as an EST client
that supports channel binding does. curl cannot: the value exists only once
the connection is up, and the CSR must be made after that.

usage: est-tls-unique.py HOST PORT CAFILE TOKEN WORKDIR CN [LABEL]
Prints the HTTP status on the first line, then the body.
"""
import base64
import http.client
import os
import ssl
import subprocess
import sys


def main():
    host, port, cafile, token, workdir, cn = sys.argv[1:7]
    label = sys.argv[7] + "/" if len(sys.argv) > 7 else ""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=30)
    conn.connect()
    binding = conn.sock.get_channel_binding("tls-unique")
    if binding is None:
        sys.exit("the TLS connection has no tls-unique value")
    cnf = os.path.join(workdir, "tls-unique.cnf")
    with open(cnf, "w") as f:
        f.write("[req]\nprompt = no\ndistinguished_name = dn\nattributes = attrs\n"
                f"[dn]\nCN = {cn}\n[attrs]\nchallengePassword = {base64.b64encode(binding).decode()}\n")
    csr = subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", os.path.join(workdir, "tls-unique.key"), "-config", cnf,
         "-addext", f"subjectAltName=DNS:{cn}", "-outform", "DER"],
        check=True, capture_output=True).stdout
    auth = base64.b64encode(f"device:{token}".encode()).decode()
    conn.request("POST", f"/.well-known/est/{label}simpleenroll", body=base64.b64encode(csr),
                 headers={"Content-Type": "application/pkcs10", "Authorization": "Basic " + auth})
    resp = conn.getresponse()
    print(resp.status)
    sys.stdout.write(resp.read().decode(errors="replace"))
    conn.close()


if __name__ == "__main__":
    main()
