/* Helpers shared by the backend plugins; see fgp.h. */
#include "fgp.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

void fgp_log(const struct fg_host *host, enum fg_level lvl, const char *request_id, const char *fmt, ...)
{
	char msg[768];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	host->log(host->ctx, lvl, request_id, msg);
}

void fgp_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

void fgp_ssl_err(char *err, size_t errlen, const char *fmt, ...)
{
	char what[512], buf[256] = "";
	unsigned long e = ERR_peek_error();
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	if (e != 0)
		ERR_error_string_n(e, buf, sizeof buf);
	ERR_clear_error();
	fgp_seterr(err, errlen, "%s%s%s", what, buf[0] ? ": " : "", buf);
}

int fgp_num_setting(const struct fg_kv *kv, size_t n, const char *key, long def, long min, long max,
		    long *out)
{
	const char *v = fg_kv_get(kv, n, key);
	char *end;
	if (v == NULL) {
		*out = def;
		return 0;
	}
	errno = 0;
	long l = strtol(v, &end, 10);
	if (errno || end == v || *end || l < min || l > max)
		return -1;
	*out = l;
	return 0;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int fgp_parse_pin(const char *t, unsigned char out[32])
{
	size_t n = 0;
	if (strncasecmp(t, "sha256:", 7) == 0)
		t += 7;
	for (const char *p = t; *p; p++) {
		if (*p == ':' || *p == ' ')
			continue;
		int hi = hexval((unsigned char)p[0]), lo = p[1] ? hexval((unsigned char)p[1]) : -1;
		if (hi < 0 || lo < 0 || n == 32)
			return -1;
		out[n++] = (unsigned char)(hi << 4 | lo);
		p++;
	}
	return n == 32 ? 0 : -1;
}

void fgp_set_result(struct fg_issue_result *res, enum fg_issue_status st, uint32_t retry, const char *fmt, ...)
{
	va_list ap;
	res->status = st;
	res->retry_after = retry;
	va_start(ap, fmt);
	vsnprintf(res->message, sizeof res->message, fmt, ap);
	va_end(ap);
}

int fgp_in_list(const char *v, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcasecmp(v, list[i]) == 0)
			return 1;
	return 0;
}

int fgp_ip_bytes(const char *t, unsigned char out[16])
{
	if (inet_pton(AF_INET, t, out) == 1)
		return 4;
	if (inet_pton(AF_INET6, t, out) == 1)
		return 16;
	return -1;
}

int fgp_names_granted(X509 *x, const struct fg_issue_request *req, int flags, char *msg, size_t msglen)
{
	X509_NAME *sn = X509_get_subject_name(x);
	int i = -1;
	char buf[256];
	while ((i = X509_NAME_get_index_by_NID(sn, NID_commonName, i)) >= 0) {
		ASN1_STRING *d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(sn, i));
		unsigned char *u = NULL;
		int n = ASN1_STRING_to_UTF8(&u, d);
		int ok = n >= 0 && strlen((char *)u) == (size_t)n &&
			 ((req->subject_cn != NULL && strcasecmp((char *)u, req->subject_cn) == 0) ||
			  ((flags & FGP_CN_MAY_COPY_SAN) &&
			   (fgp_in_list((char *)u, req->dns_names, req->n_dns) ||
			    fgp_in_list((char *)u, req->ip_names, req->n_ip))));
		if (!ok) {
			fgp_seterr(msg, msglen, "the CA issued subject CN '%s', which the policy did not decide",
				   n >= 0 ? (char *)u : "?");
			OPENSSL_free(u);
			return -1;
		}
		OPENSSL_free(u);
	}
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	int rc = 0;
	for (int k = 0; gens != NULL && k < sk_GENERAL_NAME_num(gens) && rc == 0; k++) {
		GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, k);
		const ASN1_STRING *as;
		switch (g->type) {
		case GEN_DNS:
		case GEN_EMAIL:
			as = g->d.ia5;
			snprintf(buf, sizeof buf, "%.*s", ASN1_STRING_length(as),
				 (const char *)ASN1_STRING_get0_data(as));
			if (g->type == GEN_DNS ? !fgp_in_list(buf, req->dns_names, req->n_dns)
					       : !fgp_in_list(buf, req->emails, req->n_email))
				rc = -1;
			break;
		case GEN_IPADD: {
			unsigned char ip[16];
			int found = 0;
			as = g->d.ip;
			for (size_t j = 0; j < req->n_ip && !found; j++) {
				int l = fgp_ip_bytes(req->ip_names[j], ip);
				if (l > 0 && l == ASN1_STRING_length(as) &&
				    memcmp(ip, ASN1_STRING_get0_data(as), (size_t)l) == 0)
					found = 1;
			}
			snprintf(buf, sizeof buf, "an IP address");
			if (!found)
				rc = -1;
			break;
		}
		default:
			snprintf(buf, sizeof buf, "a name of type %d", g->type);
			rc = -1;
		}
	}
	GENERAL_NAMES_free(gens);
	ERR_clear_error();
	if (rc != 0)
		fgp_seterr(msg, msglen, "the CA issued the name %s, which the policy did not decide", buf);
	return rc;
}

size_t fgp_body_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct fgp_body *b = arg;
	size_t n = size * nmemb;
	if (b->n + n > FGP_MAX_BODY) {
		b->too_big = 1;
		return 0;
	}
	unsigned char *q = realloc(b->p, b->n + n + 1);
	if (q == NULL)
		return 0;
	memcpy(q + b->n, ptr, n);
	b->p = q;
	b->n += n;
	b->p[b->n] = 0;
	return n;
}
