/*
 * est.c: a backend plugin that gets certificates from an EST server
 * (RFC 7030, with the clarifications of RFC 8951).
 *
 * Model: the gateway is the EST client on the device's behalf, as an RA is
 * (RFC 7030 section 3.2.3 and 3.7). It authenticates to the EST server with
 * HTTP Basic, a bearer token or a TLS client certificate (the gateway's RA
 * certificate), carries the device's CSR unchanged to /simpleenroll (new
 * certificates) or /simplereenroll (renewals), and hands back the
 * certificate the server issued once it certifies the device's key and
 * names only what the policy decided. An EST CA takes subject and names
 * from the CSR, so csr_needs tells the host so, and the host has the device
 * rebuild its CSR naming exactly what the policy decided before anything is
 * admitted.
 *
 * Trust (RFC 7030 section 3.6): TLS 1.2 or newer with certificate and host
 * name verification, always. The EST server is verified against
 *  - an explicit trust anchor: tls_ca_file, a PEM bundle the operator
 *    configured; or
 *  - an implicit one, pinned: with ca_fingerprint alone, the first /cacerts
 *    is fetched provisionally (host name checked, chain not yet), its CA must
 *    match the pin, and the server's own certificate must then chain to
 *    that CA for the answer to count (section 4.1.1, bootstrap). The chain
 *    is written to <state_dir>/est/<name>/implicit-ta.pem and verifies
 *    every later connection.
 * With both, /cacerts must also carry the pinned CA.
 *
 * Settings (backends.<name> in the gateway config):
 *   url             https://host[:port][/.well-known/est[/label]] (required;
 *                   /.well-known/est is added when missing)
 *   label           the arbitrary label of RFC 7030 section 3.2.2, if any
 *   tls_ca_file     explicit trust anchors (PEM) for the EST server
 *   ca_fingerprint  SHA-256 of the CA certificate /cacerts must carry
 *   username, password, password_file    HTTP Basic credentials
 *   bearer_token, bearer_token_file      an HTTP bearer token
 *   client_cert, client_key              TLS client certificate (the RA's)
 *   timeout         seconds for one HTTP exchange (default 30)
 *   retry_after     seconds before asking again when the server gave no
 *                   Retry-After with its 202 (default 60)
 *   cache_ttl       seconds the /cacerts and /csrattrs answers are reused
 *                   (default 3600)
 *
 * Durable job state: "est.state" ("pending" once the server answered 202).
 * A pending job asks again with the same request (RFC 7030 section 4.2.3:
 * the client repeats the same request after Retry-After); the CSR is
 * durable in the host's job, so this survives a gateway restart.
 *
 * Threads: issue, poll and cacerts may run concurrently; the cached
 * /cacerts and /csrattrs answers are behind a mutex.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <openssl/asn1t.h>
#include <openssl/bn.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "fleetgate/plugin.h"
#include "fgp.h"

#define MAX_BODY FGP_MAX_BODY      /* largest HTTP answer read */
#define RETRY_SECONDS 30          /* suggested retry after a transient failure */
#define MAX_RETRY_AFTER 86400     /* a Retry-After beyond a day is clamped */

/* One log line through the host, from a plugin instance (fgp.h). */
#define elog(obj, lvl, rid, ...) fgp_log((obj)->host, (lvl), (rid), __VA_ARGS__)

/* ---- csrattrs (RFC 7030 section 4.5.2), by OpenSSL ASN.1 templates ----
 *
 *   CsrAttrs ::= SEQUENCE SIZE (0..MAX) OF AttrOrOID
 *   AttrOrOID ::= CHOICE { oid OBJECT IDENTIFIER, attribute Attribute }
 */
typedef struct {
	int type;
	union {
		ASN1_OBJECT *oid;
		X509_ATTRIBUTE *attribute;
	} d;
} EST_ATTR_OR_OID;

DECLARE_ASN1_FUNCTIONS(EST_ATTR_OR_OID)
ASN1_CHOICE(EST_ATTR_OR_OID) = {
	ASN1_SIMPLE(EST_ATTR_OR_OID, d.oid, ASN1_OBJECT),
	ASN1_SIMPLE(EST_ATTR_OR_OID, d.attribute, X509_ATTRIBUTE)
} ASN1_CHOICE_END(EST_ATTR_OR_OID)
IMPLEMENT_ASN1_FUNCTIONS(EST_ATTR_OR_OID)

DEFINE_STACK_OF(EST_ATTR_OR_OID)
typedef STACK_OF(EST_ATTR_OR_OID) EST_CSR_ATTRS;
DECLARE_ASN1_FUNCTIONS(EST_CSR_ATTRS)
ASN1_ITEM_TEMPLATE(EST_CSR_ATTRS) =
	ASN1_EX_TEMPLATE_TYPE(ASN1_TFLG_SEQUENCE_OF, 0, CsrAttrs, EST_ATTR_OR_OID)
ASN1_ITEM_TEMPLATE_END(EST_CSR_ATTRS)
IMPLEMENT_ASN1_FUNCTIONS(EST_CSR_ATTRS)

/* What /csrattrs asks of a CSR, as far as a device can act on it. */
struct csr_wants {
	char key_type[16];            /* "p256", "p384", "rsa", "ed25519" or "" */
	int rsa_bits;                 /* for "rsa": the modulus size asked, or 0 */
	char text[512];               /* every OID and attribute, for logs and the policy */
};

/* What /cacerts and /csrattrs said, shared by reference. */
struct ca_view {
	int refs;                     /* under est.mu */
	int64_t fetched;
	STACK_OF(X509) *chain;        /* /cacerts: the CA first, as the server sent it otherwise */
	X509 *ca;                     /* the CA that issues (pinned, or the one that is a CA) */
	int have_wants;               /* /csrattrs answered */
	struct csr_wants wants;
};

enum auth_kind { AUTH_NONE, AUTH_BASIC, AUTH_BEARER };

struct est {
	const struct fg_host *host;
	char name[64];
	char base[1024];              /* ...//.well-known/est[/label] without the trailing slash */
	char host_name[256];          /* from base, for the bootstrap host name check */
	char tls_ca_file[PATH_MAX];   /* explicit trust anchors, or "" */
	char implicit_ta[PATH_MAX];   /* <state_dir>/est/<name>/implicit-ta.pem */
	char state_dir[PATH_MAX - 128];
	int have_pin;
	unsigned char pin[32];
	enum auth_kind auth;
	char username[256];
	char *password;               /* wiped on close */
	char *bearer;                 /* wiped on close */
	char client_cert[PATH_MAX];
	char client_key[PATH_MAX];
	long timeout;
	uint32_t retry_after;
	int64_t cache_ttl;
	pthread_mutex_t mu;
	struct ca_view *view;         /* cached, may be NULL */
	int64_t peek_failed;          /* when csr_attrs last failed to fetch (under mu) */
};

static void view_put(struct est *s, struct ca_view *v)
{
	if (v == NULL)
		return;
	pthread_mutex_lock(&s->mu);
	int last = --v->refs == 0;
	pthread_mutex_unlock(&s->mu);
	if (!last)
		return;
	sk_X509_pop_free(v->chain, X509_free);
	X509_free(v->ca);
	free(v);
}

/* ---- base64 and PKCS#7 (RFC 7030 4.1.3, 4.2.3; RFC 8951 section 3) ---- */

/* Decode base64 that may carry line breaks and other white space (RFC
 * 8951: a client tolerates both); EVP_DecodeUpdate skips white space. A
 * body that already is DER (a SEQUENCE) is taken as it is, since some
 * servers send binary. malloc'd bytes, or NULL. */
static unsigned char *b64_decode(const unsigned char *in, size_t n, size_t *outlen)
{
	size_t i = 0;
	while (i < n && isspace(in[i]))
		i++;
	if (i < n && in[i] == 0x30) {
		unsigned char *o = malloc(n - i + 1);
		if (o != NULL) {
			memcpy(o, in + i, n - i);
			*outlen = n - i;
		}
		return o;
	}
	if (n > INT_MAX)
		return NULL;
	unsigned char *out = malloc(n / 4 * 3 + 4);
	EVP_ENCODE_CTX *ctx = EVP_ENCODE_CTX_new();
	int l1 = 0, l2 = 0;
	if (out == NULL || ctx == NULL)
		goto fail;
	EVP_DecodeInit(ctx);
	if (EVP_DecodeUpdate(ctx, out, &l1, in, (int)n) < 0 || EVP_DecodeFinal(ctx, out + l1, &l2) < 0)
		goto fail;
	EVP_ENCODE_CTX_free(ctx);
	*outlen = (size_t)(l1 + l2);
	return out;
fail:
	ERR_clear_error();
	EVP_ENCODE_CTX_free(ctx);
	free(out);
	return NULL;
}

/* Base64 with 64-character lines, NUL-terminated, malloc'd. */
static char *b64_encode(const unsigned char *in, size_t n)
{
	EVP_ENCODE_CTX *ctx = EVP_ENCODE_CTX_new();
	char *out = malloc(n / 48 * 66 + 70);
	int l1 = 0, l2 = 0;
	if (ctx == NULL || out == NULL || n > INT_MAX) {
		EVP_ENCODE_CTX_free(ctx);
		free(out);
		return NULL;
	}
	EVP_EncodeInit(ctx);
	if (EVP_EncodeUpdate(ctx, (unsigned char *)out, &l1, in, (int)n) != 1) {
		EVP_ENCODE_CTX_free(ctx);
		free(out);
		return NULL;
	}
	EVP_EncodeFinal(ctx, (unsigned char *)out + l1, &l2);
	out[l1 + l2] = 0;
	EVP_ENCODE_CTX_free(ctx);
	return out;
}

/* The certificates of a base64 PKCS#7 certs-only body; NULL with err. */
static STACK_OF(X509) *certs_only(const struct est *s, const char *op, const unsigned char *body,
				  size_t n, char *err, size_t errlen)
{
	size_t dl = 0;
	unsigned char *der = b64_decode(body, n, &dl);
	const unsigned char *q = der;
	PKCS7 *p7 = NULL;
	STACK_OF(X509) *out = NULL;

	if (der == NULL) {
		fgp_seterr(err, errlen, "the EST server at %s answered /%s with a body that is not base64", s->base, op);
		return NULL;
	}
	p7 = d2i_PKCS7(NULL, &q, (long)dl);
	if (p7 == NULL || !PKCS7_type_is_signed(p7) || p7->d.sign->cert == NULL ||
	    sk_X509_num(p7->d.sign->cert) == 0) {
		fgp_ssl_err(err, errlen, "the EST server at %s answered /%s with no PKCS#7 certs-only message (RFC 7030 section 4.1.3)",
			s->base, op);
		goto out;
	}
	out = sk_X509_new_null();
	for (int i = 0; out != NULL && i < sk_X509_num(p7->d.sign->cert); i++) {
		X509 *c = sk_X509_value(p7->d.sign->cert, i);
		X509_up_ref(c);
		if (sk_X509_push(out, c) <= 0) {
			X509_free(c);
			sk_X509_pop_free(out, X509_free);
			out = NULL;
		}
	}
	if (out == NULL)
		fgp_seterr(err, errlen, "out of memory");
out:
	PKCS7_free(p7);
	free(der);
	return out;
}

/* ---- HTTP (libcurl) ---- */

/* One answer: status, body, Content-Type and Retry-After. */
struct reply {
	long code;
	struct fgp_body body;
	char ctype[256];
	int64_t retry_after;          /* seconds, -1 when absent */
	int64_t now;
};

/* Retry-After (RFC 9110 section 10.2.3): delay-seconds or an HTTP-date. */
static size_t on_header(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct reply *r = arg;
	size_t n = size * nmemb;
	static const char name[] = "retry-after:";
	if (n > sizeof name - 1 && n < 256 && strncasecmp(ptr, name, sizeof name - 1) == 0) {
		char v[256];
		size_t l = n - (sizeof name - 1);
		memcpy(v, ptr + sizeof name - 1, l);
		v[l] = 0;
		char *p = v + strspn(v, " \t"), *end;
		p[strcspn(p, "\r\n")] = 0;
		errno = 0;
		long long secs = strtoll(p, &end, 10);
		if (p[0] && *end == 0 && errno == 0 && secs >= 0) {
			r->retry_after = secs;
		} else {
			time_t t = curl_getdate(p, NULL);
			if (t != (time_t)-1)
				r->retry_after = t > r->now ? t - r->now : 0;
		}
	}
	return n;
}

/* For the bootstrap of an implicit trust anchor: the server's chain as it
 * came, checked after /cacerts has shown which CA to trust. */
struct bootstrap {
	STACK_OF(X509) *peer;
};

/* Whole-chain verification replaced for the one bootstrap /cacerts
 * request: keep the peer's chain and accept provisionally (curl still
 * checks the host name against the peer certificate); the chain is
 * verified against the pinned CA before the answer is believed. */
static int bootstrap_verify(X509_STORE_CTX *ctx, void *arg)
{
	struct bootstrap *b = arg;
	STACK_OF(X509) *u = X509_STORE_CTX_get0_untrusted(ctx);
	X509 *leaf = X509_STORE_CTX_get0_cert(ctx);
	sk_X509_pop_free(b->peer, X509_free);
	b->peer = sk_X509_new_null();
	if (b->peer == NULL || leaf == NULL)
		return 0;
	X509_up_ref(leaf);
	sk_X509_push(b->peer, leaf);
	for (int i = 0; u != NULL && i < sk_X509_num(u); i++) {
		X509 *x = sk_X509_value(u, i);
		if (X509_cmp(x, leaf) == 0)
			continue;
		X509_up_ref(x);
		sk_X509_push(b->peer, x);
	}
	X509_STORE_CTX_set_error(ctx, X509_V_OK);
	return 1;
}

static CURLcode on_ssl_ctx(CURL *c, void *sslctx, void *arg)
{
	(void)c;
	SSL_CTX_set_cert_verify_callback(sslctx, bootstrap_verify, arg);
	return CURLE_OK;
}

/* GET (post == NULL) or POST base/op. 0 with r filled whatever the HTTP
 * status, -1 with err when no answer came (unreachable, TLS refused, too
 * large). With boot set, the TLS chain is kept for a later check instead
 * of verified (see struct bootstrap). */
static int http(struct est *s, const char *op, const char *post, const char *post_type,
		struct reply *r, struct bootstrap *boot, char *err, size_t errlen)
{
	CURL *c = curl_easy_init();
	struct curl_slist *hdr = NULL;
	char cerr[CURL_ERROR_SIZE] = "", url[1200];
	int rc = -1;

	memset(r, 0, sizeof *r);
	r->retry_after = -1;
	r->now = s->host->now(s->host->ctx);
	if (c == NULL) {
		fgp_seterr(err, errlen, "cannot start an HTTP request (out of memory)");
		return -1;
	}
	snprintf(url, sizeof url, "%s/%s", s->base, op);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, s->timeout);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, s->timeout < 10 ? s->timeout : 10L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, fgp_body_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->body);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	curl_easy_setopt(c, CURLOPT_SSL_SESSIONID_CACHE, 0L);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "fleetgate-est/1");
	if (boot != NULL) {
		curl_easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
		curl_easy_setopt(c, CURLOPT_SSL_CTX_DATA, boot);
	} else if (s->tls_ca_file[0]) {
		curl_easy_setopt(c, CURLOPT_CAINFO, s->tls_ca_file);
		curl_easy_setopt(c, CURLOPT_CAPATH, NULL);
	} else {
		curl_easy_setopt(c, CURLOPT_CAINFO, s->implicit_ta);
		curl_easy_setopt(c, CURLOPT_CAPATH, NULL);
	}
	if (s->client_cert[0]) {
		curl_easy_setopt(c, CURLOPT_SSLCERT, s->client_cert);
		curl_easy_setopt(c, CURLOPT_SSLKEY, s->client_key);
	}
	/* no credentials on the provisional bootstrap connection: the server
	 * is not authenticated yet, and an impostor would collect them
	 * (/cacerts needs no HTTP authentication, RFC 7030 4.1) */
	if (boot != NULL) {
		/* nothing */
	} else if (s->auth == AUTH_BASIC) {
		curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(c, CURLOPT_USERNAME, s->username);
		curl_easy_setopt(c, CURLOPT_PASSWORD, s->password);
	} else if (s->auth == AUTH_BEARER) {
		curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
		curl_easy_setopt(c, CURLOPT_XOAUTH2_BEARER, s->bearer);
	}
	if (post != NULL) {
		char ct[128];
		snprintf(ct, sizeof ct, "Content-Type: %s", post_type);
		hdr = curl_slist_append(hdr, ct);
		hdr = curl_slist_append(hdr, "Content-Transfer-Encoding: base64");
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, post);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(post));
	}
	CURLcode cc = curl_easy_perform(c);
	if (cc != CURLE_OK) {
		if (r->body.too_big)
			fgp_seterr(err, errlen, "the EST server at %s sent more than %d bytes for /%s", s->base, MAX_BODY, op);
		else if (cc == CURLE_PEER_FAILED_VERIFICATION || cc == CURLE_SSL_CACERT_BADFILE)
			fgp_seterr(err, errlen, "the EST server at %s failed TLS verification: %s; check tls_ca_file (or ca_fingerprint) and that the url's host name is in the server's certificate",
			       s->base, cerr[0] ? cerr : curl_easy_strerror(cc));
		else if (cc == CURLE_SSL_CERTPROBLEM)
			fgp_seterr(err, errlen, "the gateway's TLS client certificate for %s cannot be used: %s; check client_cert and client_key",
			       s->base, cerr[0] ? cerr : curl_easy_strerror(cc));
		else
			fgp_seterr(err, errlen, "cannot reach the EST server at %s: %s", s->base,
			       cerr[0] ? cerr : curl_easy_strerror(cc));
		goto out;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->code);
	char *ct = NULL;
	curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
	snprintf(r->ctype, sizeof r->ctype, "%s", ct ? ct : "");
	rc = 0;
out:
	if (rc != 0) {
		free(r->body.p);
		memset(&r->body, 0, sizeof r->body);
	}
	curl_slist_free_all(hdr);
	curl_easy_cleanup(c);
	return rc;
}

/* The start of a text body, printable and on one line, for messages: EST
 * servers explain errors in text/plain (RFC 7030 section 4.2.3). */
static void snippet(const struct reply *r, char *out, size_t outlen)
{
	size_t j = 0;
	out[0] = 0;
	if (r->body.p == NULL || (strncasecmp(r->ctype, "text/", 5) != 0 && r->ctype[0] != 0))
		return;
	for (size_t i = 0; i < r->body.n && j + 1 < outlen && j < 200; i++) {
		unsigned char ch = r->body.p[i];
		if (ch == '\r' || ch == '\n' || ch == '\t')
			ch = ' ';
		if (!isprint(ch))
			continue;
		if (ch == ' ' && (j == 0 || out[j - 1] == ' '))
			continue;
		out[j++] = (char)ch;
	}
	while (j > 0 && out[j - 1] == ' ')
		j--;
	out[j] = 0;
}

/* ---- /cacerts and /csrattrs ---- */

static int cert_sha256(const X509 *x, unsigned char out[32])
{
	unsigned int n = 0;
	return X509_digest(x, EVP_sha256(), out, &n) == 1 && n == 32 ? 0 : -1;
}

/* The issuing CA among the /cacerts certificates: the pinned one, else the
 * first that is a CA. */
static X509 *pick_ca(const struct est *s, STACK_OF(X509) *certs, char *err, size_t errlen)
{
	for (int i = 0; i < sk_X509_num(certs); i++) {
		X509 *x = sk_X509_value(certs, i);
		unsigned char d[32];
		if (s->have_pin ? cert_sha256(x, d) == 0 && memcmp(d, s->pin, 32) == 0 : X509_check_ca(x) != 0) {
			X509_up_ref(x);
			return x;
		}
	}
	if (s->have_pin)
		fgp_seterr(err, errlen, "none of the %d certificates /cacerts at %s sent matches ca_fingerprint; if the CA changed, check the new certificate and update ca_fingerprint",
		       sk_X509_num(certs), s->base);
	else
		fgp_seterr(err, errlen, "/cacerts at %s sent no CA certificate", s->base);
	return NULL;
}

/* Bootstrap (RFC 7030 section 4.1.1): the server's TLS chain, kept by
 * bootstrap_verify, must chain to the pinned CA with the certificates of
 * /cacerts as intermediates. 0, or -1 with err. */
static int bootstrap_check(const struct est *s, STACK_OF(X509) *peer, X509 *ca,
			   STACK_OF(X509) *cacerts, char *err, size_t errlen)
{
	X509_STORE *st = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	STACK_OF(X509) *untrusted = sk_X509_new_null();
	int rc = -1;

	if (peer == NULL || sk_X509_num(peer) == 0) {
		fgp_seterr(err, errlen, "the EST server at %s showed no TLS certificate", s->base);
		goto out;
	}
	if (st == NULL || ctx == NULL || untrusted == NULL || X509_STORE_add_cert(st, ca) != 1) {
		fgp_ssl_err(err, errlen, "cannot set up the bootstrap check");
		goto out;
	}
	for (int i = 1; i < sk_X509_num(peer); i++)
		sk_X509_push(untrusted, sk_X509_value(peer, i));
	for (int i = 0; i < sk_X509_num(cacerts); i++)
		sk_X509_push(untrusted, sk_X509_value(cacerts, i));
	if (X509_STORE_CTX_init(ctx, st, sk_X509_value(peer, 0), untrusted) != 1) {
		fgp_ssl_err(err, errlen, "cannot set up the bootstrap check");
		goto out;
	}
	X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
	unsigned char ip[16];
	X509_VERIFY_PARAM *vp = X509_STORE_CTX_get0_param(ctx);
	if (inet_pton(AF_INET, s->host_name, ip) == 1 || inet_pton(AF_INET6, s->host_name, ip) == 1)
		X509_VERIFY_PARAM_set1_ip_asc(vp, s->host_name);
	else
		X509_VERIFY_PARAM_set1_host(vp, s->host_name, 0);
	if (X509_verify_cert(ctx) != 1) {
		fgp_seterr(err, errlen, "the TLS certificate of the EST server at %s does not chain to the pinned CA (%s); it is not the server the pin names, or set tls_ca_file to its trust anchor",
		       s->base, X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
		ERR_clear_error();
		goto out;
	}
	rc = 0;
out:
	sk_X509_free(untrusted);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(st);
	return rc;
}

/* Write the /cacerts chain as the implicit trust anchor file (temp file,
 * fsync, rename). */
static int write_ta(const struct est *s, STACK_OF(X509) *chain, char *err, size_t errlen)
{
	char tmp[PATH_MAX + 8];
	snprintf(tmp, sizeof tmp, "%s.tmp", s->implicit_ta);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
	int ok = f != NULL;
	for (int i = 0; ok && i < sk_X509_num(chain); i++)
		ok = PEM_write_X509(f, sk_X509_value(chain, i)) == 1;
	ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
	if (f != NULL)
		fclose(f);
	else if (fd >= 0)
		close(fd);
	if (!ok || rename(tmp, s->implicit_ta) != 0) {
		unlink(tmp);
		ERR_clear_error();
		fgp_seterr(err, errlen, "cannot write the implicit trust anchors to %s: %s", s->implicit_ta, strerror(errno));
		return -1;
	}
	return 0;
}

/* Key type an OID of /csrattrs names (RFC 7030 section 4.5.2: a signature
 * algorithm, or a public key algorithm with parameters in an attribute). */
static void wants_from_oid(struct csr_wants *w, const ASN1_OBJECT *o, const ASN1_TYPE *val)
{
	int nid = OBJ_obj2nid(o);
	switch (nid) {
	case NID_X9_62_id_ecPublicKey:
		if (val != NULL && val->type == V_ASN1_OBJECT) {
			int curve = OBJ_obj2nid(val->value.object);
			if (curve == NID_X9_62_prime256v1)
				snprintf(w->key_type, sizeof w->key_type, "p256");
			else if (curve == NID_secp384r1)
				snprintf(w->key_type, sizeof w->key_type, "p384");
		} else if (w->key_type[0] == 0) {
			snprintf(w->key_type, sizeof w->key_type, "ec");
		}
		break;
	case NID_ecdsa_with_SHA256:
		if (w->key_type[0] == 0)
			snprintf(w->key_type, sizeof w->key_type, "ec");
		break;
	case NID_ecdsa_with_SHA384:
		if (w->key_type[0] == 0 || strcmp(w->key_type, "ec") == 0)
			snprintf(w->key_type, sizeof w->key_type, "p384");
		break;
	case NID_rsaEncryption:
		snprintf(w->key_type, sizeof w->key_type, "rsa");
		if (val != NULL && val->type == V_ASN1_INTEGER) {
			long bits = ASN1_INTEGER_get(val->value.integer);
			if (bits >= 2048 && bits <= 8192)
				w->rsa_bits = (int)bits;
		}
		break;
	case NID_sha256WithRSAEncryption:
	case NID_sha384WithRSAEncryption:
	case NID_sha512WithRSAEncryption:
		if (w->key_type[0] == 0)
			snprintf(w->key_type, sizeof w->key_type, "rsa");
		break;
	case NID_ED25519:
		snprintf(w->key_type, sizeof w->key_type, "ed25519");
		break;
	default:
		break;
	}
}

/* An OID as the policy sees it: its OpenSSL short name (no spaces), else
 * dotted. */
static int oid_text(const ASN1_OBJECT *o, char *buf, size_t len)
{
	int nid = OBJ_obj2nid(o);
	const char *sn = nid != NID_undef ? OBJ_nid2sn(nid) : NULL;
	if (sn != NULL && strchr(sn, ' ') == NULL) {
		snprintf(buf, len, "%s", sn);
		return 0;
	}
	return OBJ_obj2txt(buf, (int)len, o, 1) > 0 ? 0 : -1;
}

static void wants_text_add(struct csr_wants *w, const ASN1_OBJECT *o)
{
	char buf[128];
	size_t used = strlen(w->text);
	if (oid_text(o, buf, sizeof buf) != 0)
		return;
	snprintf(w->text + used, sizeof w->text - used, "%s%s", used ? " " : "", buf);
}

/* Parse a /csrattrs body (base64 DER CsrAttrs). 0, or -1 with err. */
static int parse_csrattrs(const struct est *s, const unsigned char *body, size_t n,
			  struct csr_wants *w, char *err, size_t errlen)
{
	size_t dl = 0;
	unsigned char *der = b64_decode(body, n, &dl);
	const unsigned char *q = der;
	EST_CSR_ATTRS *attrs = NULL;

	memset(w, 0, sizeof *w);
	if (der == NULL) {
		fgp_seterr(err, errlen, "the EST server at %s answered /csrattrs with a body that is not base64", s->base);
		return -1;
	}
	attrs = d2i_EST_CSR_ATTRS(NULL, &q, (long)dl);
	if (attrs == NULL || q != der + dl) {
		fgp_ssl_err(err, errlen, "the EST server at %s answered /csrattrs with something that is not a CsrAttrs SEQUENCE (RFC 7030 section 4.5.2)",
			s->base);
		EST_CSR_ATTRS_free(attrs);
		free(der);
		return -1;
	}
	for (int i = 0; i < sk_EST_ATTR_OR_OID_num(attrs); i++) {
		EST_ATTR_OR_OID *a = sk_EST_ATTR_OR_OID_value(attrs, i);
		if (a->type == 0) {
			wants_text_add(w, a->d.oid);
			wants_from_oid(w, a->d.oid, NULL);
			continue;
		}
		const ASN1_OBJECT *o = X509_ATTRIBUTE_get0_object(a->d.attribute);
		wants_text_add(w, o);
		int nv = X509_ATTRIBUTE_count(a->d.attribute);
		for (int k = 0; k < nv; k++) {
			ASN1_TYPE *t = X509_ATTRIBUTE_get0_type(a->d.attribute, k);
			if (t != NULL && t->type == V_ASN1_OBJECT) {
				size_t used = strlen(w->text);
				char buf[128];
				if (oid_text(t->value.object, buf, sizeof buf) == 0)
					snprintf(w->text + used, sizeof w->text - used, "=%s", buf);
			}
			wants_from_oid(w, o, t);
		}
		if (nv == 0)
			wants_from_oid(w, o, NULL);
	}
	EST_CSR_ATTRS_free(attrs);
	free(der);
	return 0;
}

/* Fetch /cacerts (and /csrattrs, which a server need not offer). */
static struct ca_view *view_fetch(struct est *s, char *err, size_t errlen)
{
	struct ca_view *v = calloc(1, sizeof *v);
	struct reply r;
	struct bootstrap boot = { NULL };
	int bootstrapping = s->tls_ca_file[0] == 0 && access(s->implicit_ta, R_OK) != 0;
	char text[256];

	memset(&r, 0, sizeof r);
	if (v == NULL) {
		fgp_seterr(err, errlen, "out of memory");
		return NULL;
	}
	v->refs = 1;
	if (http(s, "cacerts", NULL, NULL, &r, bootstrapping ? &boot : NULL, err, errlen) != 0)
		goto fail;
	if (r.code != 200) {
		snippet(&r, text, sizeof text);
		fgp_seterr(err, errlen, "the EST server at %s answered /cacerts with HTTP %ld%s%s", s->base, r.code,
		       text[0] ? ": " : "", text);
		goto fail;
	}
	if ((v->chain = certs_only(s, "cacerts", r.body.p, r.body.n, err, errlen)) == NULL)
		goto fail;
	if ((v->ca = pick_ca(s, v->chain, err, errlen)) == NULL)
		goto fail;
	if (bootstrapping) {
		if (bootstrap_check(s, boot.peer, v->ca, v->chain, err, errlen) != 0 ||
		    write_ta(s, v->chain, err, errlen) != 0)
			goto fail;
		elog(s, FG_LEVEL_INFO, NULL, "backend %s: the EST server's CA matches ca_fingerprint; it is the trust anchor for %s from now on (%s)",
		     s->name, s->base, s->implicit_ta);
	} else if (s->tls_ca_file[0] == 0) {
		/* the CA may have grown a new certificate: keep the file current */
		if (write_ta(s, v->chain, err, errlen) != 0)
			elog(s, FG_LEVEL_WARN, NULL, "backend %s: %s", s->name, err);
	}
	/* keep the chain for making bundles while the server is away */
	BIO *mem = BIO_new(BIO_s_mem());
	for (int i = 0; mem != NULL && i < sk_X509_num(v->chain); i++)
		i2d_X509_bio(mem, sk_X509_value(v->chain, i));
	char *p = NULL;
	long pl = mem ? BIO_get_mem_data(mem, &p) : 0;
	if (pl <= 0 || s->host->state_put(s->host->ctx, "cacerts", (unsigned char *)p, (size_t)pl) != 0)
		elog(s, FG_LEVEL_WARN, NULL, "backend %s: cannot keep the CA certificates in the store", s->name);
	BIO_free(mem);
	free(r.body.p);
	r.body.p = NULL;

	/* /csrattrs: 204 or 404 when the server has no wishes (section 4.5.2) */
	if (http(s, "csrattrs", NULL, NULL, &r, NULL, text, sizeof text) == 0) {
		if (r.code == 200) {
			if (parse_csrattrs(s, r.body.p, r.body.n, &v->wants, text, sizeof text) == 0)
				v->have_wants = 1;
			else
				elog(s, FG_LEVEL_WARN, NULL, "backend %s: %s; requests go on without it", s->name, text);
		} else if (r.code != 204 && r.code != 404) {
			elog(s, FG_LEVEL_WARN, NULL, "backend %s: /csrattrs answered HTTP %ld; requests go on without it",
			     s->name, r.code);
		}
	} else {
		elog(s, FG_LEVEL_WARN, NULL, "backend %s: %s", s->name, text);
	}
	if (v->have_wants)
		elog(s, FG_LEVEL_DEBUG, NULL, "backend %s: /csrattrs: %s (key type %s)", s->name,
		     v->wants.text[0] ? v->wants.text : "nothing", v->wants.key_type[0] ? v->wants.key_type : "any");
	v->fetched = s->host->now(s->host->ctx);
	free(r.body.p);
	sk_X509_pop_free(boot.peer, X509_free);
	return v;
fail:
	free(r.body.p);
	sk_X509_pop_free(boot.peer, X509_free);
	v->refs = 1;
	sk_X509_pop_free(v->chain, X509_free);
	X509_free(v->ca);
	free(v);
	return NULL;
}

/* The CA view, fetched when missing or older than cache_ttl; a reference
 * the caller drops with view_put. */
static struct ca_view *view_get(struct est *s, char *err, size_t errlen)
{
	int64_t now = s->host->now(s->host->ctx);
	struct ca_view *v = NULL;

	pthread_mutex_lock(&s->mu);
	if (s->view != NULL && now - s->view->fetched < s->cache_ttl) {
		v = s->view;
		v->refs++;
	}
	pthread_mutex_unlock(&s->mu);
	if (v != NULL)
		return v;
	v = view_fetch(s, err, errlen);
	if (v == NULL)
		return NULL;
	pthread_mutex_lock(&s->mu);
	struct ca_view *old = s->view;
	s->view = v;
	v->refs++;              /* the cache's reference */
	pthread_mutex_unlock(&s->mu);
	view_put(s, old);
	return v;
}

/* ---- checking what came back ---- */

/* Does the CSR's key fit what /csrattrs asked? 1 yes, 0 with why. */
static int key_fits(const struct csr_wants *w, EVP_PKEY *k, char *why, size_t whylen)
{
	const char *have;
	char hb[32];
	int id = EVP_PKEY_get_base_id(k);
	if (w->key_type[0] == 0)
		return 1;
	if (id == EVP_PKEY_RSA) {
		snprintf(hb, sizeof hb, "rsa%d", EVP_PKEY_get_bits(k));
		have = hb;
		if (strcmp(w->key_type, "rsa") == 0 && (w->rsa_bits == 0 || EVP_PKEY_get_bits(k) >= w->rsa_bits))
			return 1;
	} else if (id == EVP_PKEY_EC) {
		char g[64] = "";
		size_t gl = 0;
		EVP_PKEY_get_utf8_string_param(k, "group", g, sizeof g, &gl);
		have = strcmp(g, "prime256v1") == 0 ? "p256" : strcmp(g, "secp384r1") == 0 ? "p384" : g;
		if (strcmp(w->key_type, "ec") == 0 || strcmp(w->key_type, have) == 0)
			return 1;
	} else if (id == EVP_PKEY_ED25519) {
		have = "ed25519";
		if (strcmp(w->key_type, have) == 0)
			return 1;
	} else {
		have = "another key type";
	}
	ERR_clear_error();
	if (strcmp(w->key_type, "rsa") == 0 && w->rsa_bits)
		fgp_seterr(why, whylen, "the EST CA asks for an RSA key of at least %d bits (/csrattrs) and the device's key is %s; set key_type = rsa%d in the agent's slot",
		       w->rsa_bits, have, w->rsa_bits);
	else
		fgp_seterr(why, whylen, "the EST CA asks for a %s key (/csrattrs) and the device's key is %s; set key_type = %s in the agent's slot",
		       w->key_type, have, strcmp(w->key_type, "ec") == 0 ? "p256" : strcmp(w->key_type, "rsa") == 0 ? "rsa2048" : w->key_type);
	return 0;
}

static unsigned char *to_der(X509 *x, size_t *len)
{
	unsigned char *der = NULL;
	int n = i2d_X509(x, &der);
	if (n <= 0)
		return NULL;
	unsigned char *out = malloc((size_t)n);
	if (out != NULL)
		memcpy(out, der, (size_t)n);
	OPENSSL_free(der);
	*len = (size_t)n;
	return out;
}

/* The leaf of an enrollment answer that certifies the CSR's key, with the
 * chain (the answer's other certificates, then /cacerts), into res. */
static void take_certificate(struct est *s, const struct ca_view *v, const struct fg_issue_request *req,
			     EVP_PKEY *csrkey, STACK_OF(X509) *certs, const char *op,
			     struct fg_issue_result *res)
{
	X509 *leaf = NULL;
	char msg[400];
	for (int i = 0; i < sk_X509_num(certs); i++) {
		X509 *x = sk_X509_value(certs, i);
		if (EVP_PKEY_eq(X509_get0_pubkey(x), csrkey) == 1) {
			leaf = x;
			break;
		}
	}
	ERR_clear_error();
	if (leaf == NULL) {
		fgp_set_result(res, FG_ISSUE_REJECTED, 0, "the EST server answered /%s with no certificate for the device's key", op);
		return;
	}
	if (fgp_names_granted(leaf, req, 0, msg, sizeof msg) != 0) {
		elog(s, FG_LEVEL_ERROR, req->request_id,
		     "backend %s: %s; the certificate is withheld from the device: revoke it at the CA", s->name, msg);
		fgp_set_result(res, FG_ISSUE_REJECTED, 0, "%s", msg);
		return;
	}
	size_t n = 0, cap = (size_t)sk_X509_num(certs) + (size_t)sk_X509_num(v->chain);
	res->chain_der = calloc(cap + 1, sizeof *res->chain_der);
	res->chain_len = calloc(cap + 1, sizeof *res->chain_len);
	res->cert_der = to_der(leaf, &res->cert_len);
	if (res->chain_der == NULL || res->chain_len == NULL || res->cert_der == NULL)
		goto oom;
	for (int pass = 0; pass < 2; pass++) {
		STACK_OF(X509) *from = pass == 0 ? certs : v->chain;
		for (int i = 0; i < sk_X509_num(from); i++) {
			X509 *x = sk_X509_value(from, i);
			size_t k = 0, l = 0;
			if (x == leaf || X509_cmp(x, leaf) == 0)
				continue;
			unsigned char *d = to_der(x, &l);
			if (d == NULL)
				goto oom;
			while (k < n && !(res->chain_len[k] == l && memcmp(res->chain_der[k], d, l) == 0))
				k++;
			if (k < n) {
				free(d);
				continue;
			}
			res->chain_der[n] = d;
			res->chain_len[n] = l;
			res->n_chain = ++n;
		}
	}
	fgp_set_result(res, FG_ISSUE_OK, 0, "issued by the EST server (/%s)", op);
	return;
oom:
	fg_issue_result_clear(res);
	fgp_set_result(res, FG_ISSUE_ERROR, RETRY_SECONDS, "out of memory");
}

/* ---- serverkeygen (RFC 7030 4.4) ---- */

/* One part of a multipart body: its Content-Type and body (pointers into
 * the reply). */
struct part {
	char ctype[128];
	const unsigned char *p;
	size_t n;
};

static const unsigned char *mem_find(const unsigned char *h, size_t hn, const char *needle, size_t nn)
{
	for (size_t i = 0; nn <= hn && i <= hn - nn; i++)
		if (memcmp(h + i, needle, nn) == 0)
			return h + i;
	return NULL;
}

/* Split a multipart/mixed body (RFC 2046 5.1.1) into at most max parts.
 * libcurl parses no multipart answers, so this reads the boundary
 * delimiters itself: "--boundary" lines, part headers up to an empty line,
 * the close delimiter "--boundary--". Returns the count, -1 when the body
 * is not multipart. */
static int split_multipart(const struct reply *r, struct part *parts, int max)
{
	const char *b = strcasestr(r->ctype, "boundary=");
	char delim[128];
	size_t bl;
	if (strncasecmp(r->ctype, "multipart/", 10) != 0 || b == NULL)
		return -1;
	b += 9;
	if (*b == '"') {
		b++;
		bl = strcspn(b, "\"");
	} else {
		bl = strcspn(b, "; \t");
	}
	if (bl == 0 || bl > 70)
		return -1;
	int dl = snprintf(delim, sizeof delim, "--%.*s", (int)bl, b);
	const unsigned char *body = r->body.p, *end = body + r->body.n;
	const unsigned char *at = mem_find(body, r->body.n, delim, (size_t)dl);
	int n = 0;
	while (at != NULL && n < max) {
		const unsigned char *q = at + dl;
		if (end - q >= 2 && q[0] == '-' && q[1] == '-')
			break;                              /* close delimiter */
		const unsigned char *eol = memchr(q, '\n', (size_t)(end - q));
		if (eol == NULL)
			return -1;
		q = eol + 1;
		/* part headers, up to an empty line */
		struct part *pt = &parts[n];
		memset(pt, 0, sizeof *pt);
		for (;;) {
			eol = memchr(q, '\n', (size_t)(end - q));
			if (eol == NULL)
				return -1;
			size_t ll = (size_t)(eol - q);
			if (ll > 0 && q[ll - 1] == '\r')
				ll--;
			if (ll == 0) {
				q = eol + 1;
				break;
			}
			if (ll > 13 && strncasecmp((const char *)q, "Content-Type:", 13) == 0) {
				const unsigned char *v = q + 13;
				while (v < q + ll && (*v == ' ' || *v == '\t'))
					v++;
				snprintf(pt->ctype, sizeof pt->ctype, "%.*s", (int)(q + ll - v), (const char *)v);
			}
			q = eol + 1;
		}
		const unsigned char *next = mem_find(q, (size_t)(end - q), delim, (size_t)dl);
		if (next == NULL)
			return -1;
		const unsigned char *pe = next;
		if (pe > q && pe[-1] == '\n')
			pe--;
		if (pe > q && pe[-1] == '\r')
			pe--;
		pt->p = q;
		pt->n = (size_t)(pe - q);
		n++;
		at = next;
	}
	return n;
}

/* A certificate to address the device's transport key in CMS: the CSR's
 * subject and public key. It is never signed or sent; CMS takes the
 * recipient's key and identifier from it, and the agent decrypts without
 * a certificate (trying its key on every recipient). */
static X509 *transport_recipient(X509_REQ *csr)
{
	X509 *x = X509_new();
	if (x == NULL || X509_set_version(x, 2) != 1 ||
	    ASN1_INTEGER_set(X509_get_serialNumber(x), 1) != 1 ||
	    X509_set_subject_name(x, X509_REQ_get_subject_name(csr)) != 1 ||
	    X509_set_issuer_name(x, X509_REQ_get_subject_name(csr)) != 1 ||
	    X509_set_pubkey(x, X509_REQ_get0_pubkey(csr)) != 1 ||
	    X509_gmtime_adj(X509_getm_notBefore(x), 0) == NULL ||
	    X509_gmtime_adj(X509_getm_notAfter(x), 3600) == NULL) {
		X509_free(x);
		return NULL;
	}
	return x;
}

/* Encrypt the PKCS#8 DER to the CSR's key: CMS EnvelopedData with
 * AES-256-CBC (key transport for RSA, ECDH key agreement for EC, RFC
 * 5652/5753). malloc'd DER in *out, or -1 with err. */
static int encrypt_to_csr(X509_REQ *csr, const unsigned char *der, size_t dl, unsigned char **out,
			  size_t *outlen, char *err, size_t errlen)
{
	X509 *rc_cert = transport_recipient(csr);
	STACK_OF(X509) *rcpt = sk_X509_new_null();
	BIO *in = BIO_new_mem_buf(der, (int)dl);
	CMS_ContentInfo *cms = NULL;
	unsigned char *enc = NULL;
	int n = -1, rc = -1;

	if (rc_cert == NULL || rcpt == NULL || in == NULL || sk_X509_push(rcpt, rc_cert) <= 0) {
		fgp_ssl_err(err, errlen, "cannot prepare the key's encryption");
		goto out;
	}
	cms = CMS_encrypt(rcpt, in, EVP_aes_256_cbc(), CMS_BINARY);
	if (cms == NULL || (n = i2d_CMS_ContentInfo(cms, &enc)) <= 0) {
		fgp_ssl_err(err, errlen, "cannot encrypt the server-generated key to the device's request key (an RSA or EC key is needed)");
		goto out;
	}
	if ((*out = malloc((size_t)n)) == NULL) {
		fgp_seterr(err, errlen, "out of memory");
		goto out;
	}
	memcpy(*out, enc, (size_t)n);
	*outlen = (size_t)n;
	rc = 0;
out:
	OPENSSL_free(enc);
	CMS_ContentInfo_free(cms);
	BIO_free(in);
	sk_X509_free(rcpt);
	X509_free(rc_cert);
	return rc;
}

/* A /serverkeygen answer (RFC 7030 4.4.2): multipart/mixed with the
 * private key (application/pkcs8, base64) and the certificate
 * (application/pkcs7-mime certs-only). The key is checked against the
 * certificate, encrypted to the CSR's key into res->enc_key, and wiped: it
 * is never written anywhere in clear. */
static void take_server_key(struct est *s, const struct ca_view *v, const struct fg_issue_request *req,
			    X509_REQ *csr, const struct reply *r, struct fg_issue_result *res)
{
	struct part parts[4];
	unsigned char *kder = NULL;
	size_t kl = 0;
	EVP_PKEY *key = NULL;
	STACK_OF(X509) *certs = NULL;
	char err[512];
	int np = split_multipart(r, parts, 4);

	if (np < 2) {
		fgp_set_result(res, FG_ISSUE_ERROR, RETRY_SECONDS,
			   "the EST server answered /serverkeygen with %s, not multipart/mixed with a key and a certificate (RFC 7030 4.4.2)",
			   r->ctype[0] ? r->ctype : "no Content-Type");
		return;
	}
	for (int i = 0; i < np; i++) {
		if (strncasecmp(parts[i].ctype, "application/pkcs8", 17) == 0 && kder == NULL) {
			kder = b64_decode(parts[i].p, parts[i].n, &kl);
		} else if (strncasecmp(parts[i].ctype, "application/pkcs7-mime", 22) == 0) {
			if (strcasestr(parts[i].ctype, "server-generated-key") != NULL) {
				fgp_set_result(res, FG_ISSUE_REJECTED, 0,
					   "the EST server sent the key encrypted (smime-type=server-generated-key), which this gateway does not take; have it send application/pkcs8 over TLS");
				goto out;
			}
			if (certs == NULL && (certs = certs_only(s, "serverkeygen", parts[i].p, parts[i].n, err, sizeof err)) == NULL) {
				fgp_set_result(res, FG_ISSUE_ERROR, RETRY_SECONDS, "%s", err);
				goto out;
			}
		}
	}
	const unsigned char *q = kder;
	if (kder == NULL || (key = d2i_AutoPrivateKey(NULL, &q, (long)kl)) == NULL || certs == NULL) {
		ERR_clear_error();
		fgp_set_result(res, FG_ISSUE_ERROR, RETRY_SECONDS,
			   "the EST server's /serverkeygen answer lacks %s", key == NULL ? "a readable application/pkcs8 private key" : "the certificate");
		goto out;
	}
	take_certificate(s, v, req, key, certs, "serverkeygen", res);
	if (res->status != FG_ISSUE_OK)
		goto out;
	if (encrypt_to_csr(csr, kder, kl, &res->enc_key, &res->enc_key_len, err, sizeof err) != 0) {
		fg_issue_result_clear(res);
		fgp_set_result(res, FG_ISSUE_REJECTED, 0, "%s", err);
		goto out;
	}
	fgp_set_result(res, FG_ISSUE_OK, 0, "issued by the EST server with a server-generated key (/serverkeygen)");
out:
	if (kder != NULL) {
		OPENSSL_cleanse(kder, kl);
		free(kder);
	}
	EVP_PKEY_free(key);
	sk_X509_pop_free(certs, X509_free);
}

/* A job state value as text: 1 found, 0 not, -1 error. */
static int job_text(const struct est *s, struct fg_job *job, const char *key, char *out, size_t outlen)
{
	unsigned char *v = NULL;
	size_t n = 0;
	int rc = s->host->job_get(job, key, &v, &n);
	if (rc != 1)
		return rc;
	if (n >= outlen) {
		free(v);
		return -1;
	}
	memcpy(out, v, n);
	out[n] = 0;
	free(v);
	return 1;
}

static uint32_t clamp_retry(int64_t v, uint32_t def)
{
	if (v < 0)
		return def;
	if (v < 1)
		return 1;
	return v > MAX_RETRY_AFTER ? MAX_RETRY_AFTER : (uint32_t)v;
}

/* ---- issuing ---- */

/* issue and poll: one enrollment request for the job, whatever state it
 * is in. A pending job repeats the same request (RFC 7030 4.2.3). */
static int run_job(void *state, const struct fg_issue_request *req, struct fg_issue_result *res)
{
	struct est *s = state;
	int keygen = req->struct_size >= offsetof(struct fg_issue_request, server_keygen) + sizeof req->server_keygen &&
		     req->server_keygen;
	const char *op = keygen ? "serverkeygen" : req->renewal ? "simplereenroll" : "simpleenroll";
	char st[16] = "", err[512] = "", text[256];
	const unsigned char *q = req->csr_der;
	X509_REQ *csr = d2i_X509_REQ(NULL, &q, (long)req->csr_len);
	struct ca_view *v = NULL;
	STACK_OF(X509) *certs = NULL;
	char *b64 = NULL;
	struct reply r;

	memset(&r, 0, sizeof r);
	if (csr == NULL) {
		ERR_clear_error();
		fgp_set_result(res, FG_ISSUE_REJECTED, 0, "the stored CSR cannot be read");
		return 0;
	}
	if (job_text(s, req->job, "est.state", st, sizeof st) < 0) {
		fgp_set_result(res, FG_ISSUE_ERROR, RETRY_SECONDS, "cannot read the EST job state");
		goto out;
	}
	if ((v = view_get(s, err, sizeof err)) == NULL) {
		elog(s, FG_LEVEL_WARN, req->request_id, "backend %s: %s", s->name, err);
		fgp_set_result(res, FG_ISSUE_ERROR, RETRY_SECONDS, "%s", err);
		goto out;
	}
	/* with serverkeygen the CSR's key only carries the new key home */
	if (!keygen && v->have_wants && !key_fits(&v->wants, X509_REQ_get0_pubkey(csr), err, sizeof err)) {
		elog(s, FG_LEVEL_WARN, req->request_id, "backend %s: %s", s->name, err);
		fgp_set_result(res, FG_ISSUE_REJECTED, 0, "%s", err);
		goto out;
	}
	if ((b64 = b64_encode(req->csr_der, req->csr_len)) == NULL) {
		fgp_set_result(res, FG_ISSUE_ERROR, RETRY_SECONDS, "out of memory");
		goto out;
	}
	if (http(s, op, b64, "application/pkcs10", &r, NULL, err, sizeof err) != 0) {
		/* a changed server certificate or CA shows up here: fetch
		 * /cacerts again next time */
		pthread_mutex_lock(&s->mu);
		if (s->view)
			s->view->fetched = 0;
		pthread_mutex_unlock(&s->mu);
		elog(s, FG_LEVEL_WARN, req->request_id, "backend %s: /%s: %s", s->name, op, err);
		fgp_set_result(res, FG_ISSUE_ERROR, RETRY_SECONDS, "%s", err);
		goto out;
	}
	snippet(&r, text, sizeof text);
	switch (r.code) {
	case 200:
		if (keygen) {
			take_server_key(s, v, req, csr, &r, res);
			if (res->status == FG_ISSUE_OK)
				elog(s, FG_LEVEL_INFO, req->request_id, "backend %s: certificate and server-generated key through /serverkeygen; the key goes to the device encrypted",
				     s->name);
			break;
		}
		if ((certs = certs_only(s, op, r.body.p, r.body.n, err, sizeof err)) == NULL) {
			elog(s, FG_LEVEL_WARN, req->request_id, "backend %s: %s", s->name, err);
			fgp_set_result(res, FG_ISSUE_ERROR, RETRY_SECONDS, "%s", err);
			break;
		}
		take_certificate(s, v, req, X509_REQ_get0_pubkey(csr), certs, op, res);
		if (res->status == FG_ISSUE_OK)
			elog(s, FG_LEVEL_INFO, req->request_id, "backend %s: certificate issued through /%s", s->name, op);
		break;
	case 202: {
		uint32_t ra = clamp_retry(r.retry_after, s->retry_after);
		if (strcmp(st, "pending") != 0 &&
		    s->host->job_put(req->job, "est.state", (const unsigned char *)"pending", 7) != 0) {
			fgp_set_result(res, FG_ISSUE_ERROR, RETRY_SECONDS, "cannot record the pending EST request");
			break;
		}
		elog(s, FG_LEVEL_INFO, req->request_id, "backend %s: /%s accepted, pending at the EST server; asking again in %u s",
		     s->name, op, ra);
		fgp_set_result(res, FG_ISSUE_PENDING, ra, "the EST server accepted the request and will issue later (HTTP 202)%s%s",
			   text[0] ? ": " : "", text);
		break;
	}
	case 401:
	case 403: {
		const char *how = s->auth == AUTH_BASIC ? "check username and password"
				: s->auth == AUTH_BEARER ? "check bearer_token"
				: s->client_cert[0] ? "check that the EST server accepts client_cert"
				: "set username/password, bearer_token or client_cert";
		elog(s, FG_LEVEL_ERROR, req->request_id, "backend %s: the EST server refused the gateway's credentials for /%s (HTTP %ld%s%s); %s in backends.%s",
		     s->name, op, r.code, text[0] ? ": " : "", text, how, s->name);
		fgp_set_result(res, FG_ISSUE_REJECTED, 0,
			   "the EST server refused the gateway's credentials (HTTP %ld); the operator must fix backend %s's authentication",
			   r.code, s->name);
		break;
	}
	case 400:
	case 404:
	case 405:
	case 409:
	case 413:
	case 415:
	case 422:
		elog(s, FG_LEVEL_WARN, req->request_id, "backend %s: /%s refused with HTTP %ld%s%s", s->name, op, r.code,
		     text[0] ? ": " : "", text);
		fgp_set_result(res, FG_ISSUE_REJECTED, 0, "the EST server refused the request (HTTP %ld)%s%s", r.code,
			   text[0] ? ": " : "", text[0] ? text : "");
		break;
	default: {
		/* 5xx (503 with Retry-After: busy) and anything unexpected:
		 * transient, asked again with backoff */
		uint32_t ra = clamp_retry(r.retry_after, RETRY_SECONDS);
		elog(s, FG_LEVEL_WARN, req->request_id, "backend %s: /%s answered HTTP %ld%s%s; retrying in %u s",
		     s->name, op, r.code, text[0] ? ": " : "", text, ra);
		fgp_set_result(res, FG_ISSUE_ERROR, ra, "the EST server could not answer now (HTTP %ld)%s%s; retry later",
			   r.code, text[0] ? ": " : "", text);
	}
	}
out:
	if (keygen && r.body.p != NULL)
		OPENSSL_cleanse(r.body.p, r.body.n);     /* it held the key in clear */
	free(r.body.p);
	free(b64);
	sk_X509_pop_free(certs, X509_free);
	view_put(s, v);
	X509_REQ_free(csr);
	return 0;
}

/* The agent key type to ask for when the CSR's key does not fit. */
static const char *suggest_key_type(const struct csr_wants *w)
{
	if (strcmp(w->key_type, "ec") == 0)
		return "p256";
	if (strcmp(w->key_type, "rsa") == 0)
		return w->rsa_bits > 3072 ? "rsa4096" : w->rsa_bits > 2048 ? "rsa3072" : "rsa2048";
	return w->key_type;
}

/* Names come from the CSR (an EST CA copies them). When /csrattrs asks for
 * a key type the CSR's key is not, and the host can take it, the key type
 * to make instead: the device then rebuilds its CSR with such a key. The
 * server being away is no reason to refuse here: issue says so later. */
static int est_csr_needs(void *state, const struct fg_issue_request *req, struct fg_csr_needs *needs,
			 char *err, size_t errlen)
{
	struct est *s = state;
	(void)err;
	(void)errlen;
	memset(needs, 0, sizeof *needs);
	needs->names_from_csr = 1;
	if (req->struct_size < offsetof(struct fg_issue_request, csr_needs_size) + sizeof req->csr_needs_size ||
	    req->csr_needs_size < offsetof(struct fg_csr_needs, key_type) + sizeof needs->key_type ||
	    req->csr_der == NULL)
		return 0;
	char why[512];
	int keygen = req->struct_size >= offsetof(struct fg_issue_request, server_keygen) + sizeof req->server_keygen &&
		     req->server_keygen;
	if (keygen) {
		/* the CSR's key only carries the new key home: CMS needs RSA or EC */
		const unsigned char *q = req->csr_der;
		X509_REQ *csr = d2i_X509_REQ(NULL, &q, (long)req->csr_len);
		int id = csr ? EVP_PKEY_get_base_id(X509_REQ_get0_pubkey(csr)) : EVP_PKEY_NONE;
		if (csr != NULL && id != EVP_PKEY_RSA && id != EVP_PKEY_EC)
			snprintf(needs->key_type, sizeof needs->key_type, "p256");
		ERR_clear_error();
		X509_REQ_free(csr);
		return 0;
	}
	struct ca_view *v = view_get(s, why, sizeof why);
	if (v == NULL) {
		elog(s, FG_LEVEL_DEBUG, req->request_id, "backend %s: %s; the key type is checked later", s->name, why);
		return 0;
	}
	const unsigned char *q = req->csr_der;
	X509_REQ *csr = d2i_X509_REQ(NULL, &q, (long)req->csr_len);
	if (csr != NULL && v->have_wants && !key_fits(&v->wants, X509_REQ_get0_pubkey(csr), why, sizeof why)) {
		snprintf(needs->key_type, sizeof needs->key_type, "%s", suggest_key_type(&v->wants));
		elog(s, FG_LEVEL_INFO, req->request_id, "backend %s: %s; the device is asked for a %s key",
		     s->name, why, needs->key_type);
	}
	ERR_clear_error();
	X509_REQ_free(csr);
	view_put(s, v);
	return 0;
}

#define PEEK_RETRY 30             /* seconds between csr_attrs fetches that failed */

/* What /csrattrs asked, for the policy: 1, 0 when it asked nothing. This
 * runs before every policy call, whatever backend the request goes to, so
 * it must not hold requests up: it answers from the cache, stale or not,
 * and fetches only when nothing is cached, at most once per PEEK_RETRY
 * seconds while the server is away. */
static int est_csr_attrs(void *state, struct fg_csr_attrs *out, char *err, size_t errlen)
{
	struct est *s = state;
	struct ca_view *v = NULL;
	int64_t now = s->host->now(s->host->ctx);
	int try_fetch = 0;

	memset(out, 0, sizeof *out);
	pthread_mutex_lock(&s->mu);
	if (s->view != NULL) {
		v = s->view;
		v->refs++;
	} else if (now - s->peek_failed >= PEEK_RETRY) {
		s->peek_failed = now;       /* one fetch at a time; cleared on success */
		try_fetch = 1;
	}
	pthread_mutex_unlock(&s->mu);
	if (v == NULL && !try_fetch) {
		fgp_seterr(err, errlen, "the EST server at %s could not be asked lately; asking again within %d s",
		       s->base, PEEK_RETRY);
		return -1;
	}
	if (v == NULL && (v = view_get(s, err, errlen)) == NULL)
		return -1;
	if (try_fetch) {
		pthread_mutex_lock(&s->mu);
		s->peek_failed = 0;
		pthread_mutex_unlock(&s->mu);
	}
	int rc = v->have_wants;
	if (rc) {
		snprintf(out->key_type, sizeof out->key_type, "%s", v->wants.key_type);
		snprintf(out->oids, sizeof out->oids, "%s", v->wants.text);
	}
	view_put(s, v);
	return rc;
}

/* The /cacerts chain last fetched, from plugin state, so that bundles can
 * be made while the EST server is away. */
static STACK_OF(X509) *stored_chain(struct est *s)
{
	unsigned char *der = NULL;
	size_t len = 0;
	STACK_OF(X509) *out = NULL;
	if (s->host->state_get(s->host->ctx, "cacerts", &der, &len) == 1 && (out = sk_X509_new_null()) != NULL) {
		const unsigned char *q = der, *end = der + len;
		X509 *x;
		while (q < end && (x = d2i_X509(NULL, &q, (long)(end - q))) != NULL)
			sk_X509_push(out, x);
	}
	ERR_clear_error();
	free(der);
	if (out != NULL && sk_X509_num(out) == 0) {
		sk_X509_free(out);
		out = NULL;
	}
	return out;
}

/* The /cacerts chain, the issuing CA first: these are what agents get as
 * trust anchors for this backend. */
static int est_cacerts(void *state, struct fg_cert_list *out, char *err, size_t errlen)
{
	struct est *s = state;
	struct ca_view *v = view_get(s, err, errlen);
	STACK_OF(X509) *chain = v ? v->chain : stored_chain(s);
	X509 *ca = v ? v->ca : NULL;
	int rc = -1;

	memset(out, 0, sizeof *out);
	if (chain == NULL)
		return -1;
	if (v == NULL)
		elog(s, FG_LEVEL_WARN, NULL, "backend %s: %s; using the CA certificates fetched before", s->name, err);
	size_t cap = (size_t)sk_X509_num(chain);
	out->der = calloc(cap, sizeof *out->der);
	out->len = calloc(cap, sizeof *out->len);
	if (out->der == NULL || out->len == NULL)
		goto oom;
	if (ca != NULL) {
		if ((out->der[0] = to_der(ca, &out->len[0])) == NULL)
			goto oom;
		out->n = 1;
	}
	for (int i = 0; i < sk_X509_num(chain); i++) {
		X509 *x = sk_X509_value(chain, i);
		if (ca != NULL && X509_cmp(x, ca) == 0)
			continue;
		if ((out->der[out->n] = to_der(x, &out->len[out->n])) == NULL)
			goto oom;
		out->n++;
	}
	rc = 0;
	goto out;
oom:
	fg_cert_list_clear(out);
	fgp_seterr(err, errlen, "out of memory");
out:
	if (v != NULL)
		view_put(s, v);
	else
		sk_X509_pop_free(chain, X509_free);
	return rc;
}

static int est_revoke(void *state, const unsigned char *cert_der, size_t cert_len,
		      enum fg_revoke_reason reason, char *err, size_t errlen)
{
	struct est *s = state;
	const unsigned char *q = cert_der;
	X509 *x = d2i_X509(NULL, &q, (long)cert_len);
	char *hex = NULL;
	(void)reason;
	if (x != NULL) {
		BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
		hex = bn ? BN_bn2hex(bn) : NULL;
		BN_free(bn);
	}
	ERR_clear_error();
	fgp_seterr(err, errlen, "EST has no revocation request: revoke serial %s at the CA behind backend %s yourself (fleetgate has marked it revoked)",
	       hex ? hex : "?", s->name);
	OPENSSL_free(hex);
	X509_free(x);
	return -1;
}

/* ---- open/close ---- */

static void wipe_free(char *p)
{
	if (p != NULL) {
		OPENSSL_cleanse(p, strlen(p));
		free(p);
	}
}

static void est_close(void *state)
{
	struct est *s = state;
	if (s == NULL)
		return;
	view_put(s, s->view);
	wipe_free(s->password);
	wipe_free(s->bearer);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

/* A path setting, relative to state_dir unless absolute. */
static void path_setting(const char *sd, const char *v, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s%s%s", v[0] == '/' ? "" : sd, v[0] == '/' ? "" : "/", v);
}

/* A secret from a setting or from a file named by another (the first line,
 * without its line end); malloc'd, or NULL with err. *found is 0 when
 * neither is set. */
static char *secret_setting(const struct est *s, const struct fg_kv *kv, size_t n, const char *key,
			    const char *file_key, int *found, char *err, size_t errlen)
{
	const char *v = fg_kv_get(kv, n, key), *f = fg_kv_get(kv, n, file_key);
	char path[PATH_MAX], line[4096];
	*found = v != NULL || f != NULL;
	if (v != NULL && f != NULL) {
		fgp_seterr(err, errlen, "backends.%s: set %s or %s, not both", s->name, key, file_key);
		return NULL;
	}
	if (v != NULL) {
		char *p = strdup(v);
		if (p == NULL)
			fgp_seterr(err, errlen, "out of memory");
		return p;
	}
	if (f == NULL)
		return NULL;
	path_setting(s->state_dir, f, path, sizeof path);
	FILE *fp = fopen(path, "re");
	if (fp == NULL) {
		fgp_seterr(err, errlen, "backends.%s.%s: cannot read %s: %s", s->name, file_key, path, strerror(errno));
		return NULL;
	}
	char *got = fgets(line, sizeof line, fp);
	fclose(fp);
	if (got == NULL || (line[strcspn(line, "\r\n")] = 0, line[0] == 0)) {
		fgp_seterr(err, errlen, "backends.%s.%s: %s is empty; put the secret on its first line", s->name, file_key, path);
		OPENSSL_cleanse(line, sizeof line);
		return NULL;
	}
	char *p = strdup(line);
	OPENSSL_cleanse(line, sizeof line);
	if (p == NULL)
		fgp_seterr(err, errlen, "out of memory");
	return p;
}

static int mkdirs(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof buf, "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, mode) != 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(buf, mode) != 0 && errno != EEXIST ? -1 : 0;
}

/* Keep libcurl (and what it loaded) mapped after the host unloads this
 * plugin: its libraries keep thread-local state, and freeing that under a
 * process that goes on (or under LeakSanitizer's scan at exit) is not
 * safe. The global init above is never undone either, as libcurl asks. */
static void pin_libcurl(void)
{
	Dl_info di;
	union { CURL *(*fn)(void); void *p; } u = { curl_easy_init };
	if (dladdr(u.p, &di) != 0 && di.dli_fname != NULL) {
		void *h = dlopen(di.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
		if (h != NULL)
			dlclose(h);    /* the mapping stays: RTLD_NODELETE */
	}
}

static int est_open(const struct fg_host *host, const struct fg_kv *kv, size_t n, void **state,
		    char *err, size_t errlen)
{
	struct est *s = calloc(1, sizeof *s);
	const char *v;
	long l;
	int found = 0;

	*state = NULL;
	if (s == NULL) {
		fgp_seterr(err, errlen, "out of memory");
		return -1;
	}
	pthread_mutex_init(&s->mu, NULL);
	s->host = host;
	snprintf(s->name, sizeof s->name, "%s", (v = fg_kv_get(kv, n, "name")) ? v : "est");
	snprintf(s->state_dir, sizeof s->state_dir, "%s", (v = fg_kv_get(kv, n, "state_dir")) ? v : ".");
	static const char *known[] = { "name", "state_dir", "create", "url", "label", "tls_ca_file",
		"ca_fingerprint", "username", "password", "password_file", "bearer_token", "bearer_token_file",
		"client_cert", "client_key", "timeout", "retry_after", "cache_ttl", NULL };
	for (size_t i = 0; i < n; i++) {
		size_t k = 0;
		while (known[k] && strcmp(known[k], kv[i].key) != 0)
			k++;
		if (known[k] == NULL) {
			fgp_seterr(err, errlen, "backends.%s: unknown setting '%s' for the est plugin (known: url, label, tls_ca_file, ca_fingerprint, username, password, password_file, bearer_token, bearer_token_file, client_cert, client_key, timeout, retry_after, cache_ttl)",
			       s->name, kv[i].key);
			goto fail;
		}
	}

	/* url: https only; /.well-known/est and the label added */
	v = fg_kv_get(kv, n, "url");
	CURLU *u = curl_url();
	char *h = NULL, *path = NULL;
	if (v == NULL || strncasecmp(v, "https://", 8) != 0 || u == NULL ||
	    curl_url_set(u, CURLUPART_URL, v, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &h, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK || strlen(v) > 900) {
		curl_free(h);
		curl_free(path);
		curl_url_cleanup(u);
		fgp_seterr(err, errlen, "backends.%s: set url = \"https://host[:port]\" of the EST server (TLS is required; /.well-known/est is added)", s->name);
		goto fail;
	}
	/* an IPv6 literal comes back in brackets; the certificate names it bare */
	size_t hl = strlen(h);
	if (hl > 2 && h[0] == '[' && h[hl - 1] == ']')
		snprintf(s->host_name, sizeof s->host_name, "%.*s", (int)(hl - 2), h + 1);
	else
		snprintf(s->host_name, sizeof s->host_name, "%s", h);
	int has_wk = strstr(path, "/.well-known/est") != NULL;
	curl_free(h);
	curl_free(path);
	curl_url_cleanup(u);
	size_t vl = strlen(v);
	while (vl > 8 && v[vl - 1] == '/')
		vl--;
	const char *label = fg_kv_get(kv, n, "label");
	if (label != NULL && (label[0] == 0 || strcspn(label, "/?#% ") != strlen(label) || strlen(label) > 64)) {
		fgp_seterr(err, errlen, "backends.%s.label: '%s' is not a plain label (letters, digits, - and _)", s->name, label);
		goto fail;
	}
	snprintf(s->base, sizeof s->base, "%.*s%s%s%s", (int)vl, v, has_wk ? "" : "/.well-known/est",
		 label ? "/" : "", label ? label : "");

	if ((v = fg_kv_get(kv, n, "tls_ca_file")) != NULL) {
		path_setting(s->state_dir, v, s->tls_ca_file, sizeof s->tls_ca_file);
		if (access(s->tls_ca_file, R_OK) != 0) {
			fgp_seterr(err, errlen, "backends.%s.tls_ca_file: cannot read %s: %s", s->name, s->tls_ca_file, strerror(errno));
			goto fail;
		}
	}
	if ((v = fg_kv_get(kv, n, "ca_fingerprint")) != NULL) {
		if (fgp_parse_pin(v, s->pin) != 0) {
			fgp_seterr(err, errlen, "backends.%s.ca_fingerprint: not a SHA-256 in hex; take it from `openssl x509 -in ca.pem -noout -fingerprint -sha256`", s->name);
			goto fail;
		}
		s->have_pin = 1;
	}
	if (!s->tls_ca_file[0] && !s->have_pin) {
		fgp_seterr(err, errlen, "backends.%s: set tls_ca_file (the EST server's trust anchors, PEM) or ca_fingerprint (the SHA-256 of the CA certificate /cacerts must carry), so the gateway can tell the EST server from an impostor",
		       s->name);
		goto fail;
	}
	char dir[PATH_MAX - 32];
	if ((size_t)snprintf(dir, sizeof dir, "%s/est/%s", s->state_dir, s->name) >= sizeof dir) {
		fgp_seterr(err, errlen, "backends.%s: state_dir is too long", s->name);
		goto fail;
	}
	snprintf(s->implicit_ta, sizeof s->implicit_ta, "%s/implicit-ta.pem", dir);
	if (!s->tls_ca_file[0] && mkdirs(dir, 0700) != 0) {
		fgp_seterr(err, errlen, "backends.%s: cannot create %s: %s", s->name, dir, strerror(errno));
		goto fail;
	}

	/* authentication: Basic, bearer, client certificate (with either) */
	if ((v = fg_kv_get(kv, n, "username")) != NULL) {
		if (strchr(v, ':') != NULL || strlen(v) >= sizeof s->username || v[0] == 0) {
			fgp_seterr(err, errlen, "backends.%s.username: 1 to %zu characters without ':' (RFC 7617)", s->name,
			       sizeof s->username - 1);
			goto fail;
		}
		snprintf(s->username, sizeof s->username, "%s", v);
	}
	s->password = secret_setting(s, kv, n, "password", "password_file", &found, err, errlen);
	if (found && s->password == NULL)
		goto fail;
	if ((s->username[0] != 0) != (s->password != NULL)) {
		fgp_seterr(err, errlen, "backends.%s: HTTP Basic needs both username and password (or password_file)", s->name);
		goto fail;
	}
	s->bearer = secret_setting(s, kv, n, "bearer_token", "bearer_token_file", &found, err, errlen);
	if (found && s->bearer == NULL)
		goto fail;
	if (s->bearer != NULL && s->password != NULL) {
		fgp_seterr(err, errlen, "backends.%s: choose HTTP Basic (username/password) or bearer_token, not both", s->name);
		goto fail;
	}
	s->auth = s->password ? AUTH_BASIC : s->bearer ? AUTH_BEARER : AUTH_NONE;
	const char *cc = fg_kv_get(kv, n, "client_cert"), *ck = fg_kv_get(kv, n, "client_key");
	if ((cc == NULL) != (ck == NULL)) {
		fgp_seterr(err, errlen, "backends.%s: set both client_cert and client_key (PEM), or neither", s->name);
		goto fail;
	}
	if (cc != NULL) {
		path_setting(s->state_dir, cc, s->client_cert, sizeof s->client_cert);
		path_setting(s->state_dir, ck, s->client_key, sizeof s->client_key);
		FILE *fc = fopen(s->client_cert, "re"), *fk = fopen(s->client_key, "re");
		X509 *x = fc ? PEM_read_X509(fc, NULL, NULL, NULL) : NULL;
		EVP_PKEY *k = fk ? PEM_read_PrivateKey(fk, NULL, NULL, NULL) : NULL;
		int ok = x != NULL && k != NULL && X509_check_private_key(x, k) == 1;
		if (fc)
			fclose(fc);
		if (fk)
			fclose(fk);
		X509_free(x);
		EVP_PKEY_free(k);
		if (!ok) {
			fgp_ssl_err(err, errlen, "backends.%s: client_cert %s and client_key %s must be a PEM certificate and its unencrypted PEM key",
				s->name, s->client_cert, s->client_key);
			goto fail;
		}
	}
	if (fgp_num_setting(kv, n, "timeout", 30, 1, 600, &s->timeout) != 0) {
		fgp_seterr(err, errlen, "backends.%s.timeout: seconds, 1 to 600", s->name);
		goto fail;
	}
	if (fgp_num_setting(kv, n, "retry_after", 60, 1, MAX_RETRY_AFTER, &l) != 0) {
		fgp_seterr(err, errlen, "backends.%s.retry_after: seconds, 1 to %d", s->name, MAX_RETRY_AFTER);
		goto fail;
	}
	s->retry_after = (uint32_t)l;
	if (fgp_num_setting(kv, n, "cache_ttl", 3600, 0, 7 * 86400, &l) != 0) {
		fgp_seterr(err, errlen, "backends.%s.cache_ttl: seconds, 0 to 604800", s->name);
		goto fail;
	}
	s->cache_ttl = l;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
		fgp_seterr(err, errlen, "backends.%s: libcurl would not initialise", s->name);
		goto fail;
	}
	pin_libcurl();
	*state = s;
	return 0;
fail:
	est_close(s);
	return -1;
}

static const struct fg_backend_ops est_ops = {
	.abi_version = FG_PLUGIN_ABI_VERSION,
	.struct_size = sizeof(struct fg_backend_ops),
	.name = "est",
	.description = "EST (RFC 7030) client for an upstream CA",
	.open = est_open,
	.issue = run_job,
	.poll = run_job,
	.revoke = est_revoke,
	.cacerts = est_cacerts,
	.close = est_close,
	.csr_needs = est_csr_needs,
	.csr_attrs = est_csr_attrs,
	.server_keygen = 1,
};

__attribute__((visibility("default"))) const struct fg_backend_ops *fg_backend_v1(void);
__attribute__((visibility("default"))) const struct fg_backend_ops *fg_backend_v1(void)
{
	return &est_ops;
}
