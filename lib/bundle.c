/*
 * bundle.c: the bootstrap bundle file (see fg_bundle.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/x509.h>

#include "fg_bundle.h"
#include "fg_curve.h"
#include "fg_util.h"
#include "fg_x509.h"

#define BUNDLE_MAX (1024 * 1024)

int fg_bundle_write(const char *path, const struct fg_bundle *b, char *err, size_t errlen)
{
	char when[32] = "";
	size_t pl = b->anchors_pem ? strlen(b->anchors_pem) : 0;
	size_t cap = 1024 + pl;
	char *text = malloc(cap);
	int n, rc;

	if (text == NULL) {
		fg_seterr(err, errlen, "out of memory");
		return -1;
	}
	if (b->expires > 0)
		fg_time_iso(b->expires, when, sizeof when);
	n = snprintf(text, cap,
		     "# fleetgate bootstrap bundle: keep it secret until the device has enrolled\n"
		     "version = 1\n"
		     "endpoint = %s\n"
		     "server_key = %s\n"
		     "%s%s%s"
		     "%s%s%s"
		     "%s%s%s"
		     "%s",
		     b->endpoint, b->server_key,
		     b->token[0] ? "token = " : "", b->token, b->token[0] ? "\n" : "",
		     b->group[0] ? "group = " : "", b->group, b->group[0] ? "\n" : "",
		     when[0] ? "expires = " : "", when, when[0] ? "\n" : "",
		     b->anchors_pem ? b->anchors_pem : "");
	if (n < 0 || (size_t)n >= cap) {
		OPENSSL_cleanse(text, cap);
		free(text);
		fg_seterr(err, errlen, "bundle too large");
		return -1;
	}
	rc = fg_write_file_atomic(path, text, (size_t)n, 0600, (uid_t)-1, (gid_t)-1, err, errlen);
	OPENSSL_cleanse(text, cap);
	free(text);
	return rc;
}

/* Parse "2026-11-28T11:00:00Z" (or plain seconds); 0 on error. */
static int64_t parse_time(const char *s)
{
	struct tm tm;
	memset(&tm, 0, sizeof tm);
	const char *end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (end != NULL && *end == '\0')
		return (int64_t)timegm(&tm);
	return fg_parse_duration(s) > 0 ? fg_parse_duration(s) : 0;
}

int fg_bundle_read(const char *path, struct fg_bundle *b, char *err, size_t errlen)
{
	char *text = NULL;
	size_t len = 0;
	int have_version = 0, lineno = 0, rc = -1;
	const char *k = "";
	STACK_OF(X509) *certs = NULL;

	memset(b, 0, sizeof *b);
	if (fg_read_file(path, BUNDLE_MAX, &text, &len, err, errlen) != 0)
		return -1;
	char *pem = strstr(text, "-----BEGIN ");
	for (char *line = text; line && line < (pem ? pem : text + len);) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = '\0';
		lineno++;
		char *p = line;
		while (*p == ' ' || *p == '\t')
			p++;
		size_t l = strlen(p);
		while (l && (p[l - 1] == ' ' || p[l - 1] == '\t' || p[l - 1] == '\r'))
			p[--l] = '\0';
		if (*p != '\0' && *p != '#') {
			char *eq = strchr(p, '=');
			if (eq == NULL) {
				fg_seterr(err, errlen, "%s:%d: expected 'key = value'", path, lineno);
				goto out;
			}
			char *v = eq + 1, *ke = eq;
			k = p;
			while (ke > p && (ke[-1] == ' ' || ke[-1] == '\t'))
				ke--;
			*ke = '\0';
			while (*v == ' ' || *v == '\t')
				v++;
			size_t vl = strlen(v);
			if (strcmp(k, "version") == 0) {
				if (strcmp(v, "1") != 0) {
					fg_seterr(err, errlen, "%s: bundle version %s is not supported; this agent reads version 1",
						  path, v);
					goto out;
				}
				have_version = 1;
			} else if (strcmp(k, "endpoint") == 0) {
				if (vl >= sizeof b->endpoint)
					goto toolong;
				memcpy(b->endpoint, v, vl + 1);
			} else if (strcmp(k, "server_key") == 0) {
				if (vl >= sizeof b->server_key)
					goto toolong;
				memcpy(b->server_key, v, vl + 1);
			} else if (strcmp(k, "token") == 0) {
				if (vl >= sizeof b->token)
					goto toolong;
				memcpy(b->token, v, vl + 1);
			} else if (strcmp(k, "group") == 0) {
				if (vl >= sizeof b->group)
					goto toolong;
				memcpy(b->group, v, vl + 1);
			} else if (strcmp(k, "expires") == 0) {
				b->expires = parse_time(v);
			}
			/* other keys: from a newer gateway; ignored */
		}
		line = nl ? nl + 1 : NULL;
		continue;
toolong:
		fg_seterr(err, errlen, "%s:%d: value of '%s' is too long", path, lineno, k);
		goto out;
	}
	if (!have_version || b->endpoint[0] == '\0' || b->server_key[0] == '\0' || pem == NULL) {
		fg_seterr(err, errlen, "%s is not a complete bootstrap bundle: %s is missing; ask the operator for a new one",
			  path, !have_version ? "'version'" : b->endpoint[0] == '\0' ? "'endpoint'"
				: b->server_key[0] == '\0' ? "'server_key'" : "the trust anchor certificate");
		goto out;
	}
	if (!fg_curve_key_valid(b->server_key)) {
		fg_seterr(err, errlen, "%s: server_key is not a 40-character Z85 CURVE key", path);
		goto out;
	}
	certs = fg_certs_from_pem(pem, strlen(pem), err, errlen);
	if (certs == NULL) {
		char tmp[256];
		snprintf(tmp, sizeof tmp, "%s: trust anchors unreadable: %s", path, err ? err : "");
		fg_seterr(err, errlen, "%s", tmp);
		goto out;
	}
	b->anchors_pem = strdup(pem);
	if (b->anchors_pem == NULL) {
		fg_seterr(err, errlen, "out of memory");
		goto out;
	}
	rc = 0;
out:
	sk_X509_pop_free(certs, X509_free);
	OPENSSL_cleanse(text, len);
	free(text);
	if (rc != 0)
		fg_bundle_clear(b);
	return rc;
}

void fg_bundle_clear(struct fg_bundle *b)
{
	if (b == NULL)
		return;
	free(b->anchors_pem);
	OPENSSL_cleanse(b, sizeof *b);
}
