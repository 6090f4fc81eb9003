/*
 * Helpers shared by the backend plugins: messages, settings and pins.
 * fgp.c is compiled into each plugin (plugins/meson.build), so nothing here
 * is part of the plugin ABI and every plugin keeps these symbols hidden.
 */
#ifndef FLEETGATE_FGP_H
#define FLEETGATE_FGP_H

#include <stddef.h>
#include <openssl/x509.h>
#include "fleetgate/plugin.h"

/* One log line through the host, formatted. */
void fgp_log(const struct fg_host *host, enum fg_level lvl, const char *request_id, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Format into err (nothing when err is NULL or errlen 0). */
void fgp_seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Like fgp_seterr, with the oldest queued OpenSSL error appended after
 * ": "; empties OpenSSL's error queue. */
void fgp_ssl_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A whole decimal setting in [min, max]; def when absent. 0, or -1 when
 * present but not such a number. */
int fgp_num_setting(const struct fg_kv *kv, size_t n, const char *key, long def, long min, long max,
		    long *out);

/* A SHA-256 fingerprint as operators write it ("sha256:AB:CD:...",
 * "AB CD ...", "abcd...") into 32 bytes. 0, or -1 when it is not 32 bytes
 * of hex. */
int fgp_parse_pin(const char *text, unsigned char out[32]);

/* An HTTP answer's body as libcurl delivers it (CURLOPT_WRITEFUNCTION
 * fgp_body_write, CURLOPT_WRITEDATA a struct fgp_body): malloc'd, always
 * NUL-terminated, at most FGP_MAX_BODY bytes (more sets too_big and stops
 * the transfer). The caller frees p. */
#define FGP_MAX_BODY (1 << 20)
struct fgp_body {
	unsigned char *p;
	size_t n;
	int too_big;
};
size_t fgp_body_write(char *ptr, size_t size, size_t nmemb, void *body);

/* Set a result's status, retry time and message. */
void fgp_set_result(struct fg_issue_result *res, enum fg_issue_status st, uint32_t retry, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* 1 when v is in list (ASCII case-insensitive), else 0. */
int fgp_in_list(const char *v, const char *const *list, size_t n);

/* Textual IPv4/IPv6 into out: 4 or 16 (the length), -1 when neither. */
int fgp_ip_bytes(const char *text, unsigned char out[16]);

/* Whether every name an upstream CA put in x was decided by the policy in
 * req: subject CNs equal to req->subject_cn, and dNSName, rfc822Name and
 * iPAddress SANs in req's lists; any other SAN type is refused. With
 * FGP_CN_MAY_COPY_SAN a CN naming one of the decided DNS names or IP
 * addresses passes too (ACME CAs copy a SAN into the CN). 0, or -1 with
 * msg naming the first name that was not decided. */
enum { FGP_CN_MAY_COPY_SAN = 1 };
int fgp_names_granted(X509 *x, const struct fg_issue_request *req, int flags, char *msg, size_t msglen);

#endif
