/*
 * acme_chal: the pieces of ACME challenge answering (RFC 8555 8) that need
 * no ACME server: the account key's JWK thumbprint (RFC 7638), key
 * authorizations (RFC 8555 8.1), the dns-01 TXT value (RFC 8555 8.4), and
 * running the operator's dns-01 hook command.
 *
 * Plain functions with no state, used by acme.c and by the unit tests.
 */
#ifndef FG_ACME_CHAL_H
#define FG_ACME_CHAL_H

#include <stddef.h>

/* base64url of a SHA-256 digest, without padding, is 43 characters. */
#define ACME_B64_SHA256_LEN 43

/* The RFC 7638 thumbprint of a public JWK given as JSON text holding only
 * the required members (RFC 7638 3.2): SHA-256 over the members in
 * lexicographic order, no whitespace, base64url. out gets 43 characters
 * and a NUL. 0, or -1 when jwk_json is not a JSON object. */
int acme_thumbprint(const char *jwk_json, char out[ACME_B64_SHA256_LEN + 1]);

/* token "." thumbprint (RFC 8555 8.1) into out. The token must be base64url
 * (RFC 8555 8.3: at least 128 bits of entropy; we take 16..127
 * characters). 0, or -1 when the token is malformed or out too small. */
int acme_key_authorization(const char *token, const char *thumbprint, char *out, size_t outlen);

/* The dns-01 TXT record value: base64url(SHA-256(key authorization))
 * (RFC 8555 8.4). 0 or -1. */
int acme_dns_value(const char *key_authorization, char out[ACME_B64_SHA256_LEN + 1]);

/* 1 when s is non-empty base64url without padding. */
int acme_token_ok(const char *s);

/*
 * Run the operator's hook: path is executed directly (fork/execve, no
 * shell) with argv { path, action }, the gateway's environment plus the
 * "NAME=value" strings of env_add (NULL-terminated), stdin from /dev/null,
 * stdout and stderr captured together (the last outlen-1 bytes kept in
 * output, NUL-terminated), in a process group of its own that is killed
 * after timeout_s seconds. 0 when it exited 0; -1 with err saying how it
 * ended (exit status, signal, timeout, or why it could not start).
 */
int acme_hook_run(const char *path, const char *action, const char *const *env_add, int timeout_s,
		  char *output, size_t outlen, char *err, size_t errlen);

#endif
