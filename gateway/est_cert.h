/*
 * est_cert: the TLS server certificate of the EST front-end, made by
 * `fleetgate init --est HOST:PORT` from the gateway's local CA.
 */
#ifndef FG_EST_CERT_H
#define FG_EST_CERT_H

#include <stddef.h>

/* A fresh P-256 key (written to key_path, 0600) and a certificate for it
 * signed by the CA in ca_key_path/ca_crt_path (PEM): serverAuth, one year,
 * subjectAltName from host (an IP address or a DNS name; "*", "0.0.0.0"
 * and "::" give localhost, 127.0.0.1 and ::1), written with the CA
 * certificate after it to cert_path (0644). 0, or -1 with err. */
int est_cert_make(const char *host, const char *ca_key_path, const char *ca_crt_path,
		  const char *cert_path, const char *key_path, char *err, size_t errlen);

#endif
