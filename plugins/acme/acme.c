/*
 * acme.c: a backend plugin that gets certificates from an ACME CA (RFC 8555).
 *
 * Model: the gateway is the ACME client on the device's behalf. It holds one
 * ES256 account key per backend (made on first use and kept, with the
 * account URL, in plugin state), orders a certificate for the names the
 * policy decided, answers the authorizations, and finalizes the order with
 * the device's CSR unchanged: the device's key never leaves the device. An
 * ACME CA takes the names from the CSR, so csr_needs sets names_from_csr
 * and the host makes the device send a CSR naming exactly the decision.
 *
 * Challenges (RFC 8555 8, see docs/acme.md): each authorization is answered
 * in the job's mode (setting challenge, or the policy's acme_challenge):
 * http-01 served by the gateway's HTTP side (host service http01_publish),
 * http-01 served by the agent on the device (the challenges go back with a
 * PENDING result; answered on a request that carries the device's
 * acknowledgement, recorded in the job first), or dns-01 through the
 * operator's dns_hook. acme_chal.c computes
 * thumbprints, key authorizations and TXT values, and runs the hook.
 *
 * Settings (backends.<name> in the gateway config):
 *   directory      https URL of the ACME directory (required)
 *   tls_ca_file    trust anchors for the ACME server's TLS (default: system)
 *   root_url       URL of the CA's root certificate(s), PEM, for cacerts
 *                  (pebble: https://localhost:15000/roots/0); ACME has none
 *   contact        mailto: address for the account (optional)
 *   eab_kid        external account binding key id (RFC 8555 7.3.4), with
 *   eab_hmac_key   its MAC key, base64url; both or neither
 *   timeout        seconds for one HTTP exchange (default 30)
 *   poll_interval  seconds the host waits before asking again about a
 *                  pending order when the CA gives no Retry-After (default 5)
 *   inline_wait    seconds one issue/poll call may wait for the CA before it
 *                  returns PENDING (default 10)
 *   cache_ttl      seconds the root_url answer is reused (default 3600)
 *   challenge      http-01-gateway (default), http-01-agent or dns-01
 *   dns_hook       command publishing/removing _acme-challenge TXT records
 *   hook_timeout   seconds dns_hook may run (default 60)
 *
 * Plugin state: "account.key" (PEM, the account key), "account.url"
 * (the account's kid) and "account.key.next" (a rolled-over key written
 * ahead, "" when none; see rollover). Job state: "acme.order" (the order URL, written as
 * soon as newOrder answers), so a resumed job polls its order rather than
 * ordering again; "acme.http01" (tokens published on the gateway),
 * "acme.ack" (tokens the device acknowledged), "acme.dns" and
 * "acme.dns.ok" (TXT records the hook was asked for and made), each a
 * newline-separated list.
 *
 * Also: revocation (revokeCert, 7.6), account key rollover (keyChange,
 * 7.3.5, through the admin op) and renewal information (RFC 9773) when the
 * directory offers it.
 *
 * Threads: issue, poll and cacerts may run concurrently. The account, the
 * directory and the cached nonce are behind a mutex; HTTP exchanges run
 * outside it (each with its own curl handle and a nonce of its own).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "fleetgate/plugin.h"
#include "fgp.h"
#include "acme_chal.h"

/* One log line through the host, from a plugin instance (fgp.h). */
#define alog(obj, lvl, rid, ...) fgp_log((obj)->host, (lvl), (rid), __VA_ARGS__)

#define MAX_BODY FGP_MAX_BODY      /* largest HTTP answer read */
#define RETRY_SECONDS 30          /* suggested retry after a transient failure */
#define NONCE_TRIES 16            /* tries of one request while the CA says badNonce (RFC 8555 6.5) */
#define ERR_PREFIX "urn:ietf:params:acme:error:"

/* Outcome of one ACME exchange: ACME_RETRY is worth trying again later
 * (CA unreachable, rateLimited, serverInternal), ACME_FINAL is not. */
enum acme_rc { ACME_OK, ACME_RETRY, ACME_FINAL, ACME_RC_MAX };

struct acme {
	const struct fg_host *host;
	char name[64];
	char dir_url[1024];
	char tls_ca_file[PATH_MAX];
	char root_url[1024];
	char contact[256];
	char eab_kid[256];            /* RFC 8555 7.3.4, "" for none */
	unsigned char eab_key[128];   /* the decoded HMAC key */
	size_t eab_key_len;
	long timeout;                 /* seconds per HTTP exchange */
	uint32_t poll_interval;       /* seconds, when no Retry-After */
	long inline_wait;             /* seconds one call may wait */
	CURLSH *share;                /* connections and TLS sessions kept across exchanges */
	pthread_mutex_t share_mu[CURL_LOCK_DATA_LAST]; /* share's locks, one per kind of data */
	pthread_mutex_t mu;
	/* under mu: */
	int have_dir;
	char new_nonce[1024];         /* RFC 8555 7.1.1 directory */
	char new_account[1024];
	char new_order[1024];
	char key_change[1024];        /* "" when the CA offers none (7.3.5) */
	char revoke_cert[1024];       /* "" when the CA offers none (7.6) */
	char renewal_info[1024];      /* "" when the CA offers no ARI (RFC 9773 3) */
	EVP_PKEY *key;                /* account key, P-256 */
	unsigned char key_digest[32]; /* SHA-256 of the stored PEM a->key came from */
	char kid[1024];               /* account URL, "" before newAccount */
	char nonce[256];              /* one spare Replay-Nonce, "" if none */
	struct fg_cert_list roots;    /* last answer of root_url */
	int64_t roots_fetched;        /* Unix seconds, 0 never */
	int64_t cache_ttl;            /* seconds roots are reused */
	/* challenges (RFC 8555 8), set at open: */
	int challenge;                /* enum chal_mode: the default mode */
	char dns_hook[PATH_MAX];      /* dns-01 hook command, "" none */
	long hook_timeout;            /* seconds the hook may run */
};

/* One HTTP answer. */
struct resp {
	long code;                    /* HTTP status */
	struct fgp_body body;         /* malloc'd, NUL-terminated */
	char nonce[256];              /* Replay-Nonce (RFC 8555 6.5.1) */
	char location[1024];          /* Location */
	long retry_after;             /* seconds, -1 when absent (RFC 8555 8.2) */
	char ctype[128];
};

static void resp_clear(struct resp *r)
{
	free(r->body.p);
	memset(r, 0, sizeof *r);
	r->retry_after = -1;
}

/* ---- base64url (RFC 8555 6.1: no padding) ---- */

/* A malloc'd base64url text of p[0..n), or NULL. */
static char *b64url(const unsigned char *p, size_t n)
{
	size_t cap = 4 * ((n + 2) / 3) + 1;
	char *out = malloc(cap);
	if (out == NULL || n > INT_MAX) {
		free(out);
		return NULL;
	}
	int len = EVP_EncodeBlock((unsigned char *)out, p, (int)n);
	while (len > 0 && out[len - 1] == '=')
		len--;
	out[len] = 0;
	for (char *c = out; *c; c++) {
		if (*c == '+')
			*c = '-';
		else if (*c == '/')
			*c = '_';
	}
	return out;
}

static char *b64url_str(const char *s)
{
	return b64url((const unsigned char *)s, strlen(s));
}

/* Decodes base64url text (padding optional) into out (outcap bytes).
 * The length, or -1 when the text is not base64url or does not fit. */
static long b64url_decode(const char *text, unsigned char *out, size_t outcap)
{
	size_t n = strlen(text);
	while (n > 0 && text[n - 1] == '=')
		n--;
	if (n == 0 || n % 4 == 1 || n > 4096)
		return -1;
	size_t padded = (n + 3) / 4 * 4;
	char *t = malloc(padded + 1);
	unsigned char *raw = malloc(padded / 4 * 3 + 1);
	long len = -1;
	if (t == NULL || raw == NULL)
		goto out;
	for (size_t i = 0; i < n; i++) {
		char c = text[i];
		if (c == '-')
			c = '+';
		else if (c == '_')
			c = '/';
		else if (c == '+' || c == '/')
			goto out;       /* base64, not base64url */
		t[i] = c;
	}
	for (size_t i = n; i < padded; i++)
		t[i] = '=';
	t[padded] = 0;
	int l = EVP_DecodeBlock(raw, (unsigned char *)t, (int)padded);
	if (l < 0)
		goto out;
	l -= (int)(padded - n);      /* EVP_DecodeBlock counts the padding as zero bytes */
	if (l <= 0 || (size_t)l > outcap)
		goto out;
	memcpy(out, raw, (size_t)l);
	len = l;
out:
	ERR_clear_error();
	if (raw != NULL)
		OPENSSL_cleanse(raw, padded / 4 * 3 + 1);
	free(raw);
	free(t);
	return len;
}

/* ---- HTTP (libcurl) ---- */

/* Copies a header's value (trimmed) into out when the line is "name: ...". */
static void header_value(const char *line, size_t n, const char *name, char *out, size_t outlen)
{
	size_t k = strlen(name);
	if (n <= k || strncasecmp(line, name, k) != 0 || line[k] != ':')
		return;
	line += k + 1;
	n -= k + 1;
	while (n > 0 && isspace((unsigned char)*line))
		line++, n--;
	while (n > 0 && isspace((unsigned char)line[n - 1]))
		n--;
	snprintf(out, outlen, "%.*s", (int)n, line);
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct resp *r = arg;
	size_t n = size * nmemb;
	char ra[64] = "";
	header_value(ptr, n, "Replay-Nonce", r->nonce, sizeof r->nonce);
	header_value(ptr, n, "Location", r->location, sizeof r->location);
	header_value(ptr, n, "Retry-After", ra, sizeof ra);
	if (ra[0]) {
		char *end;
		long v = strtol(ra, &end, 10);
		if (end != ra && *end == 0 && v >= 0) {
			r->retry_after = v;
		} else {
			time_t t = curl_getdate(ra, NULL);   /* an HTTP-date */
			time_t now = time(NULL);
			if (t != -1)
				r->retry_after = t > now ? (long)(t - now) : 0;
		}
	}
	return n;
}

/* One exchange: method "GET", "HEAD" or "POST" (with body as
 * application/jose+json). 0 when the server answered, whatever the HTTP
 * status (in r->code); -1 with err when it could not be reached. */
static int http(const struct acme *a, const char *method, const char *url, const char *body,
		const char *accept, struct resp *r, char *err, size_t errlen)
{
	CURL *c = curl_easy_init();
	struct curl_slist *hdr = NULL;
	char cerr[CURL_ERROR_SIZE] = "", acc[160];
	int rc = -1;

	resp_clear(r);
	if (c == NULL) {
		fgp_seterr(err, errlen, "cannot start an HTTP request (out of memory)");
		return -1;
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, a->timeout);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, a->timeout < 10 ? a->timeout : 10L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, fgp_body_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &r->body);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(c, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	curl_easy_setopt(c, CURLOPT_USERAGENT, "fleetgate-acme/1");
	if (a->share != NULL)
		curl_easy_setopt(c, CURLOPT_SHARE, a->share);
	if (a->tls_ca_file[0])
		curl_easy_setopt(c, CURLOPT_CAINFO, a->tls_ca_file);
	if (accept != NULL) {
		snprintf(acc, sizeof acc, "Accept: %s", accept);
		hdr = curl_slist_append(hdr, acc);
	}
	if (strcmp(method, "HEAD") == 0) {
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	} else if (strcmp(method, "POST") == 0) {
		hdr = curl_slist_append(hdr, "Content-Type: application/jose+json");
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	if (hdr != NULL)
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
	CURLcode cc = curl_easy_perform(c);
	if (cc != CURLE_OK) {
		if (r->body.too_big)
			fgp_seterr(err, errlen, "the ACME server at %s sent more than %d bytes", url, MAX_BODY);
		else
			fgp_seterr(err, errlen, "cannot reach the ACME server at %s: %s", url,
			       cerr[0] ? cerr : curl_easy_strerror(cc));
		goto out;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->code);
	char *ct = NULL;
	curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
	snprintf(r->ctype, sizeof r->ctype, "%s", ct ? ct : "");
	rc = 0;
out:
	curl_slist_free_all(hdr);
	curl_easy_cleanup(c);
	return rc;
}

/* ---- problem documents (RFC 8555 6.7, RFC 7807) ---- */

/* Short type of a problem ("badNonce" for urn:ietf:params:acme:error:badNonce). */
static const char *short_type(const char *type)
{
	if (type == NULL)
		return "";
	return strncmp(type, ERR_PREFIX, strlen(ERR_PREFIX)) == 0 ? type + strlen(ERR_PREFIX) : type;
}

/* Problem types worth trying again later rather than refusing the job. */
static int transient_type(const char *t)
{
	return strcmp(t, "rateLimited") == 0 || strcmp(t, "serverInternal") == 0 ||
	       strcmp(t, "connection") == 0 || strcmp(t, "dns") == 0 || strcmp(t, "badNonce") == 0;
}

/* A problem object (a response body or an "error" field) as a message in
 * err; sets *type to the short type (static storage in the object, valid
 * while obj lives). */
static void problem_text(json_t *obj, const char *what, char *err, size_t errlen, const char **type)
{
	const char *t = json_string_value(json_object_get(obj, "type"));
	const char *d = json_string_value(json_object_get(obj, "detail"));
	*type = short_type(t);
	fgp_seterr(err, errlen, "%s: the ACME CA says %s%s%s", what, (*type)[0] ? *type : "error",
	       d ? ": " : "", d ? d : "");
}

/* ---- the account key and JWS (RFC 8555 6.2, RFC 7515) ---- */

/* The account key's public JWK (RFC 7518 6.2.1) as a new json object. */
static json_t *jwk_of(EVP_PKEY *key)
{
	BIGNUM *x = NULL, *y = NULL;
	unsigned char bx[32], by[32];
	char *sx = NULL, *sy = NULL;
	json_t *j = NULL;
	if (EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &x) != 1 ||
	    EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &y) != 1 ||
	    BN_bn2binpad(x, bx, 32) != 32 || BN_bn2binpad(y, by, 32) != 32)
		goto out;
	if ((sx = b64url(bx, 32)) == NULL || (sy = b64url(by, 32)) == NULL)
		goto out;
	/* members in lexicographic order, as the RFC 7638 thumbprint needs */
	j = json_pack("{s:s, s:s, s:s, s:s}", "crv", "P-256", "kty", "EC", "x", sx, "y", sy);
out:
	ERR_clear_error();
	BN_free(x);
	BN_free(y);
	free(sx);
	free(sy);
	return j;
}

/* ES256 over text: the raw 64-byte r||s (RFC 7518 3.4), base64url,
 * malloc'd; NULL with err. OpenSSL gives a DER ECDSA-Sig-Value. */
static char *es256(EVP_PKEY *key, const char *text, char *err, size_t errlen)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char *der = NULL, raw[64];
	size_t dlen = 0;
	ECDSA_SIG *sig = NULL;
	char *out = NULL;
	if (md == NULL || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
	    EVP_DigestSign(md, NULL, &dlen, (const unsigned char *)text, strlen(text)) != 1 ||
	    (der = OPENSSL_malloc(dlen)) == NULL ||
	    EVP_DigestSign(md, der, &dlen, (const unsigned char *)text, strlen(text)) != 1) {
		fgp_ssl_err(err, errlen, "cannot sign the ACME request with the account key");
		goto out;
	}
	const unsigned char *q = der;
	if ((sig = d2i_ECDSA_SIG(NULL, &q, (long)dlen)) == NULL ||
	    BN_bn2binpad(ECDSA_SIG_get0_r(sig), raw, 32) != 32 ||
	    BN_bn2binpad(ECDSA_SIG_get0_s(sig), raw + 32, 32) != 32) {
		fgp_ssl_err(err, errlen, "cannot convert the ECDSA signature to JWS form");
		goto out;
	}
	if ((out = b64url(raw, sizeof raw)) == NULL)
		fgp_seterr(err, errlen, "out of memory");
out:
	ECDSA_SIG_free(sig);
	OPENSSL_free(der);
	EVP_MD_CTX_free(md);
	return out;
}

/* A flattened JWS (RFC 7515 7.2.2) of payload (NULL: POST-as-GET, an empty
 * payload, RFC 8555 6.3) for url with nonce (NULL: none, for the inner JWS
 * of keyChange, RFC 8555 7.3.5); "jwk" when kid is NULL, else "kid".
 * Malloc'd JSON text, or NULL with err. */
static char *jws(EVP_PKEY *key, const char *kid, const char *nonce, const char *url,
		 const char *payload, char *err, size_t errlen)
{
	json_t *prot = json_pack("{s:s, s:s}", "alg", "ES256", "url", url);
	json_t *env = NULL;
	char *ptext = NULL, *p64 = NULL, *pl64 = NULL, *input = NULL, *sig = NULL, *out = NULL;
	if (prot == NULL || (nonce != NULL && json_object_set_new(prot, "nonce", json_string(nonce)) != 0))
		goto oom;
	if (kid != NULL) {
		if (json_object_set_new(prot, "kid", json_string(kid)) != 0)
			goto oom;
	} else {
		json_t *jwk = jwk_of(key);
		if (jwk == NULL || json_object_set_new(prot, "jwk", jwk) != 0) {
			fgp_seterr(err, errlen, "cannot express the account key as a JWK");
			goto out;
		}
	}
	if ((ptext = json_dumps(prot, JSON_COMPACT)) == NULL || (p64 = b64url_str(ptext)) == NULL ||
	    (pl64 = payload ? b64url_str(payload) : strdup("")) == NULL ||
	    asprintf(&input, "%s.%s", p64, pl64) < 0) {
		input = NULL;
		goto oom;
	}
	if ((sig = es256(key, input, err, errlen)) == NULL)
		goto out;
	env = json_pack("{s:s, s:s, s:s}", "protected", p64, "payload", pl64, "signature", sig);
	if (env == NULL || (out = json_dumps(env, JSON_COMPACT)) == NULL)
		goto oom;
	goto out;
oom:
	fgp_seterr(err, errlen, "out of memory building an ACME request");
out:
	json_decref(prot);
	json_decref(env);
	free(ptext);
	free(p64);
	free(pl64);
	free(input);
	free(sig);
	return out;
}

/* ---- directory, nonces, account ---- */

/* Reads the directory once (RFC 8555 7.1.1). Called with a->mu held. */
static enum acme_rc dir_load(struct acme *a, char *err, size_t errlen)
{
	struct resp r = { .retry_after = -1 };
	json_t *j = NULL;
	enum acme_rc rc = ACME_RETRY;
	if (a->have_dir)
		return ACME_OK;
	if (http(a, "GET", a->dir_url, NULL, "application/json", &r, err, errlen) != 0)
		goto out;
	if (r.code != 200) {
		fgp_seterr(err, errlen, "the ACME directory %s answered HTTP %ld; check the directory setting",
		       a->dir_url, r.code);
		goto out;
	}
	j = json_loads(r.body.p ? (const char *)r.body.p : "", 0, NULL);
	const char *nn = json_string_value(json_object_get(j, "newNonce"));
	const char *na = json_string_value(json_object_get(j, "newAccount"));
	const char *no = json_string_value(json_object_get(j, "newOrder"));
	if (nn == NULL || na == NULL || no == NULL) {
		fgp_seterr(err, errlen, "%s is not an ACME directory (no newNonce, newAccount or newOrder)",
		       a->dir_url);
		goto out;
	}
	snprintf(a->new_nonce, sizeof a->new_nonce, "%s", nn);
	snprintf(a->new_account, sizeof a->new_account, "%s", na);
	snprintf(a->new_order, sizeof a->new_order, "%s", no);
	const char *kc = json_string_value(json_object_get(j, "keyChange"));
	const char *rv = json_string_value(json_object_get(j, "revokeCert"));
	snprintf(a->key_change, sizeof a->key_change, "%s", kc ? kc : "");
	snprintf(a->revoke_cert, sizeof a->revoke_cert, "%s", rv ? rv : "");
	const char *ri = json_string_value(json_object_get(j, "renewalInfo"));
	snprintf(a->renewal_info, sizeof a->renewal_info, "%s", ri ? ri : "");
	a->have_dir = 1;
	rc = ACME_OK;
out:
	json_decref(j);
	resp_clear(&r);
	return rc;
}

/* A fresh nonce into out: the spare one when there is one, else from
 * newNonce (RFC 8555 7.2). */
static enum acme_rc nonce_take(struct acme *a, char *out, size_t outlen, char *err, size_t errlen)
{
	struct resp r = { .retry_after = -1 };
	char url[1024];
	pthread_mutex_lock(&a->mu);
	snprintf(out, outlen, "%s", a->nonce);
	a->nonce[0] = 0;
	snprintf(url, sizeof url, "%s", a->new_nonce);
	pthread_mutex_unlock(&a->mu);
	if (out[0])
		return ACME_OK;
	if (http(a, "HEAD", url, NULL, NULL, &r, err, errlen) != 0)
		return ACME_RETRY;
	snprintf(out, outlen, "%s", r.nonce);
	long code = r.code;
	resp_clear(&r);
	if (out[0] == 0) {
		fgp_seterr(err, errlen, "the ACME server's newNonce (%s) answered HTTP %ld with no Replay-Nonce",
		       url, code);
		return ACME_RETRY;
	}
	return ACME_OK;
}

static void nonce_keep(struct acme *a, const char *nonce)
{
	if (nonce[0] == 0)
		return;
	pthread_mutex_lock(&a->mu);
	snprintf(a->nonce, sizeof a->nonce, "%s", nonce);
	pthread_mutex_unlock(&a->mu);
}

/* A signed POST to url (payload NULL: POST-as-GET). kid NULL signs with
 * "jwk". ACME_OK on a 2xx answer in r; otherwise the problem as a message
 * in err and whether it is worth retrying. A badNonce is retried at once
 * with the nonce that came with it (RFC 8555 6.5). */
static enum acme_rc post(struct acme *a, EVP_PKEY *key, const char *kid, const char *url,
			 const char *payload, const char *accept, struct resp *r, char *err,
			 size_t errlen)
{
	char nonce[256];
	for (int tries = 0;; tries++) {
		enum acme_rc rc = nonce_take(a, nonce, sizeof nonce, err, errlen);
		if (rc != ACME_OK)
			return rc;
		char *body = jws(key, kid, nonce, url, payload, err, errlen);
		if (body == NULL)
			return ACME_RETRY;
		int h = http(a, "POST", url, body, accept, r, err, errlen);
		free(body);
		if (h != 0)
			return ACME_RETRY;
		nonce_keep(a, r->nonce);
		if (r->code >= 200 && r->code < 300)
			return ACME_OK;
		json_t *p = json_loads(r->body.p ? (const char *)r->body.p : "", 0, NULL);
		const char *type = "";
		if (json_is_object(p)) {
			problem_text(p, url, err, errlen, &type);
		} else {
			fgp_seterr(err, errlen, "%s: the ACME server answered HTTP %ld", url, r->code);
		}
		int bad_nonce = strcmp(type, "badNonce") == 0;
		rc = transient_type(type) || r->code >= 500 || r->code == 429 ? ACME_RETRY : ACME_FINAL;
		if (strcmp(type, "accountDoesNotExist") == 0)
			rc = ACME_RETRY;  /* the caller forgets the account; see account_lost */
		json_decref(p);
		if (!bad_nonce || tries + 1 >= NONCE_TRIES)
			return rc;
		alog(a, FG_LEVEL_DEBUG, NULL, "backend %s: badNonce from %s; retrying with the nonce that came with it",
		     a->name, url);
	}
}

/* The account key from plugin state, made and stored on first use.
 * Called with a->mu held, on every use of the account: the stored key is
 * read each time and a->key replaced when it changed, so that a key rolled
 * over by the operator (fleetgate backend acme-rollover, another process)
 * is taken up by a running gateway at its next request. */
static int key_load(struct acme *a, char *err, size_t errlen)
{
	unsigned char *pem = NULL, dg[32];
	size_t len = 0;
	BIO *b = NULL;
	EVP_PKEY *k = NULL;
	int rc = -1;
	int g = a->host->state_get(a->host->ctx, "account.key", &pem, &len);
	if (g < 0) {
		fgp_seterr(err, errlen, "backend %s: cannot read the ACME account key from the plugin state", a->name);
		goto out;
	}
	if (g == 1 && len > 0) {
		if (EVP_Digest(pem, len, dg, NULL, EVP_sha256(), NULL) != 1) {
			fgp_ssl_err(err, errlen, "backend %s: cannot hash the stored ACME account key", a->name);
			goto out;
		}
		if (a->key != NULL && memcmp(dg, a->key_digest, sizeof dg) == 0) {
			rc = 0;
			goto out;
		}
		if ((b = BIO_new_mem_buf(pem, (int)len)) == NULL ||
		    (k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL)) == NULL) {
			fgp_ssl_err(err, errlen, "backend %s: the stored ACME account key cannot be read", a->name);
			goto out;
		}
		if (a->key != NULL)
			alog(a, FG_LEVEL_INFO, NULL, "backend %s: the ACME account key changed in the plugin state (rollover); using the new key",
			     a->name);
	} else {
		char *p = NULL;
		long n;
		if ((k = EVP_EC_gen("P-256")) == NULL || (b = BIO_new(BIO_s_mem())) == NULL ||
		    PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) != 1 ||
		    (n = BIO_get_mem_data(b, &p)) <= 0 ||
		    EVP_Digest(p, (size_t)n, dg, NULL, EVP_sha256(), NULL) != 1) {
			fgp_ssl_err(err, errlen, "backend %s: cannot make an ACME account key", a->name);
			goto out;
		}
		int put = a->host->state_put(a->host->ctx, "account.key", (unsigned char *)p, (size_t)n);
		OPENSSL_cleanse(p, (size_t)n);
		if (put != 0) {
			fgp_seterr(err, errlen, "backend %s: cannot store the new ACME account key", a->name);
			goto out;
		}
		alog(a, FG_LEVEL_INFO, NULL, "backend %s: made a new ACME account key (P-256)", a->name);
	}
	EVP_PKEY_free(a->key);
	a->key = k;
	memcpy(a->key_digest, dg, sizeof dg);
	k = NULL;
	rc = 0;
out:
	if (pem != NULL) {
		OPENSSL_cleanse(pem, len);
		free(pem);
	}
	BIO_free(b);
	EVP_PKEY_free(k);
	return rc;
}

/* The externalAccountBinding of a newAccount request (RFC 8555 7.3.4): a
 * flattened JWS, HS256 with the CA's MAC key, whose protected header names
 * eab_kid and the newAccount URL and whose payload is the account's public
 * JWK. A new json object, or NULL with err. */
static json_t *eab_binding(const struct acme *a, EVP_PKEY *key, const char *url, char *err, size_t errlen)
{
	json_t *prot = json_pack("{s:s, s:s, s:s}", "alg", "HS256", "kid", a->eab_kid, "url", url);
	json_t *jwk = jwk_of(key), *out = NULL;
	char *ptext = NULL, *jtext = NULL, *p64 = NULL, *pl64 = NULL, *input = NULL, *sig64 = NULL;
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	if (prot == NULL || jwk == NULL || (ptext = json_dumps(prot, JSON_COMPACT)) == NULL ||
	    (jtext = json_dumps(jwk, JSON_COMPACT)) == NULL || (p64 = b64url_str(ptext)) == NULL ||
	    (pl64 = b64url_str(jtext)) == NULL || asprintf(&input, "%s.%s", p64, pl64) < 0) {
		input = NULL;
		fgp_seterr(err, errlen, "out of memory building the external account binding");
		goto out;
	}
	if (HMAC(EVP_sha256(), a->eab_key, (int)a->eab_key_len, (const unsigned char *)input, strlen(input),
		 mac, &maclen) == NULL) {
		fgp_ssl_err(err, errlen, "backend %s: cannot compute the external account binding's HS256 MAC", a->name);
		goto out;
	}
	if ((sig64 = b64url(mac, maclen)) == NULL ||
	    (out = json_pack("{s:s, s:s, s:s}", "protected", p64, "payload", pl64, "signature", sig64)) == NULL)
		fgp_seterr(err, errlen, "out of memory building the external account binding");
out:
	OPENSSL_cleanse(mac, sizeof mac);
	json_decref(prot);
	json_decref(jwk);
	free(ptext);
	free(jtext);
	free(p64);
	free(pl64);
	free(input);
	free(sig64);
	return out;
}

/* Adds what the operator should do to a refused newAccount's message:
 * the CA wants an external account binding, or refused the one sent. */
static void account_hint(const struct acme *a, char *err, size_t errlen)
{
	char base[1024];
	snprintf(base, sizeof base, "%s", err);
	if (strstr(base, "externalAccountRequired") != NULL && a->eab_kid[0] == 0)
		fgp_seterr(err, errlen, "%s; this CA requires an external account binding: set eab_kid and eab_hmac_key (base64url) in backends.%s to the values the CA gave you",
		       base, a->name);
	else if (a->eab_kid[0] && (strstr(base, "unauthorized") != NULL || strstr(base, "malformed") != NULL))
		fgp_seterr(err, errlen, "%s; the CA refused the external account binding for key id '%s': check backends.%s.eab_kid and eab_hmac_key against what the CA gave you",
		       base, a->eab_kid, a->name);
}

/* The account (RFC 8555 7.3): directory, key and kid ready, registering
 * the key with newAccount on first use. On success *key is a reference for
 * the caller to free and kid a copy. The mutex is held throughout so that
 * two first requests do not register twice. */
static enum acme_rc account(struct acme *a, EVP_PKEY **key, char *kid, size_t kidlen, char *err,
			    size_t errlen)
{
	struct resp r = { .retry_after = -1 };
	unsigned char *url = NULL;
	size_t ulen = 0;
	char *payload = NULL;
	json_t *p = NULL;
	enum acme_rc rc;

	pthread_mutex_lock(&a->mu);
	if ((rc = dir_load(a, err, errlen)) != ACME_OK)
		goto out;
	rc = ACME_RETRY;
	if (key_load(a, err, errlen) != 0)
		goto out;
	if (a->kid[0] == 0) {
		int g = a->host->state_get(a->host->ctx, "account.url", &url, &ulen);
		if (g < 0) {
			fgp_seterr(err, errlen, "backend %s: cannot read the ACME account URL from the plugin state", a->name);
			goto out;
		}
		if (g == 1 && ulen > 0 && ulen < sizeof a->kid) {
			memcpy(a->kid, url, ulen);
			a->kid[ulen] = 0;
		}
	}
	if (a->kid[0] == 0) {
		p = json_pack("{s:b}", "termsOfServiceAgreed", 1);
		if (p != NULL && a->contact[0])
			json_object_set_new(p, "contact", json_pack("[s]", a->contact));
		if (p != NULL && a->eab_kid[0]) {
			json_t *eab = eab_binding(a, a->key, a->new_account, err, errlen);
			if (eab == NULL)
				goto out;
			json_object_set_new(p, "externalAccountBinding", eab);
		}
		if (p == NULL || (payload = json_dumps(p, JSON_COMPACT)) == NULL) {
			fgp_seterr(err, errlen, "out of memory");
			goto out;
		}
		/* post() takes the mutex for nonces: release it meanwhile;
		 * XXX two first requests racing here may both register, which
		 * an ACME CA answers with the same account (RFC 8555 7.3.1) */
		EVP_PKEY *k = a->key;
		char url_na[1024];
		snprintf(url_na, sizeof url_na, "%s", a->new_account);
		EVP_PKEY_up_ref(k);
		pthread_mutex_unlock(&a->mu);
		rc = post(a, k, NULL, url_na, payload, NULL, &r, err, errlen);
		EVP_PKEY_free(k);
		pthread_mutex_lock(&a->mu);
		if (rc != ACME_OK) {
			account_hint(a, err, errlen);
			goto out;
		}
		rc = ACME_RETRY;
		if (r.location[0] == 0 || strlen(r.location) >= sizeof a->kid) {
			fgp_seterr(err, errlen, "the ACME CA's newAccount answer has no usable Location");
			goto out;
		}
		if (a->host->state_put(a->host->ctx, "account.url", (unsigned char *)r.location,
				       strlen(r.location)) != 0) {
			fgp_seterr(err, errlen, "backend %s: cannot store the ACME account URL", a->name);
			goto out;
		}
		snprintf(a->kid, sizeof a->kid, "%s", r.location);
		alog(a, FG_LEVEL_INFO, NULL, "backend %s: ACME account %s", a->name, a->kid);
	}
	EVP_PKEY_up_ref(a->key);
	*key = a->key;
	snprintf(kid, kidlen, "%s", a->kid);
	rc = ACME_OK;
out:
	pthread_mutex_unlock(&a->mu);
	json_decref(p);
	free(payload);
	free(url);
	resp_clear(&r);
	return rc;
}

/* The CA no longer knows the account (pebble forgets everything when it
 * restarts): forget the kid, so that the next attempt registers again. */
static void account_lost(struct acme *a, const char *kid)
{
	pthread_mutex_lock(&a->mu);
	if (strcmp(a->kid, kid) == 0) {
		a->kid[0] = 0;
		a->host->state_put(a->host->ctx, "account.url", (const unsigned char *)"", 0);
		alog(a, FG_LEVEL_WARN, NULL, "backend %s: the ACME CA does not know account %s; registering again",
		     a->name, kid);
	}
	pthread_mutex_unlock(&a->mu);
}

/* ---- issuing ---- */

/* How authorizations are answered (setting challenge, or the policy's
 * acme_challenge per request). */
enum chal_mode { CH_HTTP_GATEWAY, CH_HTTP_AGENT, CH_DNS, CH_MAX };
static const char *const chal_names[CH_MAX] = { "http-01-gateway", "http-01-agent", "dns-01" };

#define MAX_CHALS 16                  /* authorizations of one order answered by the device */

/* How much of struct fg_issue_result the host has: a host older than a
 * field appended to it must not see that field written, not even zeroed. */
static size_t result_size(const struct acme *a)
{
	return FG_RESULT_HAS(a->host, renew_after) ? sizeof(struct fg_issue_result)
						    : offsetof(struct fg_issue_result, renew_after);
}

/* fg_issue_result_clear within the host's size (see result_size). */
static void result_reset(const struct acme *a, struct fg_issue_result *res)
{
	free(res->cert_der);
	for (size_t i = 0; i < res->n_chain; i++)
		free(res->chain_der[i]);
	free(res->chain_der);
	free(res->chain_len);
	free(res->challenges);
	free(res->enc_key);
	memset(res, 0, result_size(a));
}

/* One issuance in flight: what run_job's steps share. */
struct job {
	struct acme *a;
	const struct fg_issue_request *req;
	EVP_PKEY *key;                /* account key, a reference */
	char kid[1024];
	char order[1024];             /* order URL (RFC 8555 7.1.3) */
	char err[512];
	long retry_after;             /* the CA's last Retry-After, -1 none */
	/* appended for challenge answering: */
	enum chal_mode mode;
	char thumb[ACME_B64_SHA256_LEN + 1]; /* RFC 7638 thumbprint of the account key */
	struct fg_challenge chals[MAX_CHALS]; /* http-01-agent: what the device serves */
	char chal_urls[MAX_CHALS][1024];     /* their challenge URLs, "" once answered */
	size_t n_chals;
	long http_code;               /* HTTP status of the last answer, 0 none */
};

/* A signed POST for the job; parses a JSON answer into *out when out is
 * not NULL. Forgets the account when the CA does not know it. */
static enum acme_rc job_post(struct job *j, const char *url, const char *payload, json_t **out)
{
	struct resp r = { .retry_after = -1 };
	enum acme_rc rc = post(j->a, j->key, j->kid, url, payload, NULL, &r, j->err, sizeof j->err);
	if (rc != ACME_OK && strstr(j->err, "accountDoesNotExist") != NULL)
		account_lost(j->a, j->kid);
	j->retry_after = r.retry_after;
	j->http_code = r.code;
	if (rc == ACME_OK && out != NULL) {
		*out = json_loads(r.body.p ? (const char *)r.body.p : "", 0, NULL);
		if (!json_is_object(*out)) {
			json_decref(*out);
			*out = NULL;
			fgp_seterr(j->err, sizeof j->err, "%s: the ACME CA's answer is not a JSON object", url);
			rc = ACME_RETRY;
		}
	}
	resp_clear(&r);
	return rc;
}

/* Answers a challenge with {} (RFC 8555 7.5.1). A challenge that was
 * answered already (before a gateway restart, or by a call that then died)
 * may have left "pending" between the read of its authorization and this
 * answer, and a CA may refuse a second answer (pebble: malformed "Cannot
 * update challenge with status valid"). That is no failure: the challenge
 * is read again (POST-as-GET), and one that is processing or valid counts
 * as answered. */
static enum acme_rc answer_challenge(struct job *j, const char *url)
{
	enum acme_rc rc = job_post(j, url, "{}", NULL);
	if (rc != ACME_FINAL)
		return rc;
	char refused[sizeof j->err];
	json_t *ch = NULL;
	snprintf(refused, sizeof refused, "%s", j->err);
	if (job_post(j, url, NULL, &ch) == ACME_OK) {
		const char *st = json_string_value(json_object_get(ch, "status"));
		if (st != NULL && (strcmp(st, "processing") == 0 || strcmp(st, "valid") == 0)) {
			alog(j->a, FG_LEVEL_INFO, j->req->request_id,
			     "backend %s: challenge %s was answered already (it is %s)", j->a->name, url, st);
			j->err[0] = 0;
			json_decref(ch);
			return ACME_OK;
		}
	}
	json_decref(ch);
	snprintf(j->err, sizeof j->err, "%s", refused);
	return rc;
}

/* newOrder (RFC 8555 7.4) for the decided names, dns and ip (RFC 8738)
 * identifiers; the order URL goes into the job before anything else. */
static enum acme_rc new_order(struct job *j)
{
	const struct fg_issue_request *req = j->req;
	json_t *ids = json_array(), *o = NULL;
	char *payload = NULL, url[1024];
	struct resp r = { .retry_after = -1 };
	enum acme_rc rc = ACME_RETRY;

	for (size_t i = 0; ids != NULL && i < req->n_dns; i++)
		json_array_append_new(ids, json_pack("{s:s, s:s}", "type", "dns", "value", req->dns_names[i]));
	for (size_t i = 0; ids != NULL && i < req->n_ip; i++)
		json_array_append_new(ids, json_pack("{s:s, s:s}", "type", "ip", "value", req->ip_names[i]));
	if (ids == NULL || (o = json_pack("{s:O}", "identifiers", ids)) == NULL ||
	    (payload = json_dumps(o, JSON_COMPACT)) == NULL) {
		fgp_seterr(j->err, sizeof j->err, "out of memory");
		goto out;
	}
	pthread_mutex_lock(&j->a->mu);
	snprintf(url, sizeof url, "%s", j->a->new_order);
	pthread_mutex_unlock(&j->a->mu);
	rc = post(j->a, j->key, j->kid, url, payload, NULL, &r, j->err, sizeof j->err);
	j->retry_after = r.retry_after;       /* a rateLimited newOrder says when */
	j->http_code = r.code;
	if (rc != ACME_OK) {
		if (strstr(j->err, "accountDoesNotExist") != NULL)
			account_lost(j->a, j->kid);
		goto out;
	}
	rc = ACME_RETRY;
	if (r.location[0] == 0 || strlen(r.location) >= sizeof j->order) {
		fgp_seterr(j->err, sizeof j->err, "the ACME CA's newOrder answer has no usable Location");
		goto out;
	}
	if (j->a->host->job_put(req->job, "acme.order", (unsigned char *)r.location, strlen(r.location)) != 0) {
		fgp_seterr(j->err, sizeof j->err, "cannot keep the ACME order URL in the job store");
		goto out;
	}
	snprintf(j->order, sizeof j->order, "%s", r.location);
	alog(j->a, FG_LEVEL_INFO, req->request_id, "backend %s: ACME order %s", j->a->name, j->order);
	rc = ACME_OK;
out:
	json_decref(ids);
	json_decref(o);
	free(payload);
	resp_clear(&r);
	return rc;
}

/* ---- challenges (RFC 8555 8) ---- */

/* A field the host's struct covers (it may be older than this plugin). */
#define REQ_HAS(r, f) ((r)->struct_size >= offsetof(struct fg_issue_request, f) + sizeof((r)->f))
#define HOST_HAS(h, f) ((h)->struct_size >= offsetof(struct fg_host, f) + sizeof((h)->f))

/* The challenge mode of this request: the policy's acme_challenge when it
 * chose one, else the backend's setting. */
static enum chal_mode job_mode(const struct acme *a, const struct fg_issue_request *req)
{
	if (REQ_HAS(req, acme_challenge) && req->acme_challenge != NULL)
		for (int m = 0; m < CH_MAX; m++)
			if (strcmp(req->acme_challenge, chal_names[m]) == 0)
				return (enum chal_mode)m;
	return (enum chal_mode)a->challenge;
}

/* Job state key as a malloc'd string ("" when absent), or NULL on error. */
static char *jstate_get(struct job *j, const char *key)
{
	unsigned char *v = NULL;
	size_t n = 0;
	int g = j->a->host->job_get(j->req->job, key, &v, &n);
	if (g < 0)
		return NULL;
	char *s = malloc(g == 1 ? n + 1 : 1);
	if (s != NULL) {
		if (g == 1)
			memcpy(s, v, n);
		s[g == 1 ? n : 0] = '\0';
	}
	free(v);
	return s;
}

/* 1 when line is one of the newline-separated lines of list. */
static int has_line(const char *list, const char *line)
{
	size_t n = strlen(line);
	for (const char *p = list; p != NULL && *p;) {
		const char *e = strchr(p, '\n');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		if (l == n && strncmp(p, line, n) == 0)
			return 1;
		p = e ? e + 1 : NULL;
	}
	return 0;
}

/* Adds line to the list kept in job state key (durable when 0). */
static int jstate_add_line(struct job *j, const char *key, const char *line)
{
	char *cur = jstate_get(j, key), *nv = NULL;
	int rc = -1;
	if (cur == NULL)
		goto out;
	if (has_line(cur, line)) {
		rc = 0;
		goto out;
	}
	if (asprintf(&nv, "%s%s\n", cur, line) < 0) {
		nv = NULL;
		goto out;
	}
	rc = j->a->host->job_put(j->req->job, key, (unsigned char *)nv, strlen(nv));
out:
	if (rc != 0)
		fgp_seterr(j->err, sizeof j->err, "cannot keep the ACME challenge state (%s) in the job store", key);
	free(cur);
	free(nv);
	return rc;
}

/* The account key's RFC 7638 thumbprint, once per job. 0 or -1. */
static int job_thumb(struct job *j)
{
	json_t *jwk;
	char *text;
	if (j->thumb[0])
		return 0;
	if ((jwk = jwk_of(j->key)) == NULL || (text = json_dumps(jwk, JSON_COMPACT)) == NULL) {
		json_decref(jwk);
		fgp_seterr(j->err, sizeof j->err, "cannot compute the account key's thumbprint");
		return -1;
	}
	int rc = acme_thumbprint(text, j->thumb);
	free(text);
	json_decref(jwk);
	if (rc != 0)
		fgp_seterr(j->err, sizeof j->err, "cannot compute the account key's thumbprint");
	return rc;
}

/* "<domain> <TXT value>" into line (and the value into val); line. */
static const char *line_of(char *line, size_t len, const char *ident, const char *ka,
			   char val[ACME_B64_SHA256_LEN + 1])
{
	if (acme_dns_value(ka, val) != 0)
		val[0] = '\0';
	snprintf(line, len, "%s %s", ident, val);
	return line;
}

/* Runs dns_hook with action "present" or "cleanup" for domain and the
 * TXT value (RFC 8555 8.4); its output goes to the log. 0, or -1 with
 * j->err saying what failed. */
static int dns_hook(struct job *j, const char *action, const char *domain, const char *value)
{
	struct acme *a = j->a;
	char e_act[64], e_dom[320], e_rec[340], e_val[80], e_rid[100], e_be[100];
	char out[2048], herr[PATH_MAX + 200];
	const char *env[] = { e_act, e_dom, e_rec, e_val, e_rid, e_be, NULL };

	snprintf(e_act, sizeof e_act, "FLEETGATE_ACME_ACTION=%s", action);
	snprintf(e_dom, sizeof e_dom, "FLEETGATE_ACME_DOMAIN=%s", domain);
	snprintf(e_rec, sizeof e_rec, "FLEETGATE_ACME_RECORD=_acme-challenge.%s", domain);
	snprintf(e_val, sizeof e_val, "FLEETGATE_ACME_VALUE=%s", value);
	snprintf(e_rid, sizeof e_rid, "FLEETGATE_ACME_REQUEST_ID=%s", j->req->request_id ? j->req->request_id : "");
	snprintf(e_be, sizeof e_be, "FLEETGATE_ACME_BACKEND=%s", a->name);
	/* A confined gateway runs it outside its sandbox (fg_host.run_hook). */
	int r = FG_HOST_HAS_RUN_HOOK(a->host)
			? a->host->run_hook(a->host->ctx, a->dns_hook, action, env, (int)a->hook_timeout, out, sizeof out,
					    herr, sizeof herr)
			: acme_hook_run(a->dns_hook, action, env, (int)a->hook_timeout, out, sizeof out, herr, sizeof herr);
	/* the hook's output, line by line */
	char *last = NULL, *save = NULL;
	for (char *line = strtok_r(out, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		alog(a, r == 0 ? FG_LEVEL_INFO : FG_LEVEL_WARN, j->req->request_id, "backend %s: dns_hook %s %s: %s",
		     a->name, action, domain, line);
		last = line;
	}
	if (r != 0) {
		fgp_seterr(j->err, sizeof j->err, "the dns-01 hook failed to %s the TXT record _acme-challenge.%s: %s%s%s; fix the hook (the request is kept and retried)",
		       strcmp(action, "present") == 0 ? "publish" : "remove", domain, herr, last ? ": " : "",
		       last ? last : "");
		alog(a, FG_LEVEL_WARN, j->req->request_id, "backend %s: %s", a->name, j->err);
		return -1;
	}
	alog(a, FG_LEVEL_INFO, j->req->request_id, "backend %s: dns_hook %s _acme-challenge.%s done", a->name, action,
	     domain);
	return 0;
}

/* The order no longer needs its challenges (ready, valid, refused or
 * given up): withdraw the gateway's http-01 answers and have the hook
 * remove the TXT records it made. A failed removal is logged, not fatal. */
static void challenges_done(struct job *j)
{
	char *h = jstate_get(j, "acme.http01"), *d = jstate_get(j, "acme.dns"), *save = NULL;
	char keep[sizeof j->err];

	memcpy(keep, j->err, sizeof keep);
	if (h != NULL && h[0]) {
		for (char *t = strtok_r(h, "\n", &save); t != NULL; t = strtok_r(NULL, "\n", &save))
			if (HOST_HAS(j->a->host, http01_withdraw) && j->a->host->http01_withdraw != NULL)
				j->a->host->http01_withdraw(j->a->host->ctx, t);
		j->a->host->job_put(j->req->job, "acme.http01", (const unsigned char *)"", 0);
	}
	if (d != NULL && d[0]) {
		for (char *l = strtok_r(d, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save)) {
			char *sp = strchr(l, ' ');
			if (sp == NULL)
				continue;
			*sp = '\0';
			if (dns_hook(j, "cleanup", l, sp + 1) != 0)
				alog(j->a, FG_LEVEL_ERROR, j->req->request_id,
				     "backend %s: remove the TXT record _acme-challenge.%s by hand", j->a->name, l);
		}
		j->a->host->job_put(j->req->job, "acme.dns", (const unsigned char *)"", 0);
		j->a->host->job_put(j->req->job, "acme.dns.ok", (const unsigned char *)"", 0);
	}
	memcpy(j->err, keep, sizeof keep);
	free(h);
	free(d);
}

/* 1 when the device acknowledged token in this request. */
static int req_ready(const struct fg_issue_request *req, const char *token)
{
	if (!REQ_HAS(req, n_challenges_ready))
		return 0;
	for (size_t i = 0; i < req->n_challenges_ready; i++)
		if (req->challenges_ready[i] != NULL && strcmp(req->challenges_ready[i], token) == 0)
			return 1;
	return 0;
}

/* Copies the challenges the device serves into res (for a PENDING reply). */
static void chals_to_result(struct job *j, struct fg_issue_result *res)
{
	free(res->challenges);
	res->challenges = NULL;
	res->n_challenges = 0;
	if (j->n_chals == 0 || (res->challenges = calloc(j->n_chals, sizeof *res->challenges)) == NULL)
		return;
	memcpy(res->challenges, j->chals, j->n_chals * sizeof *res->challenges);
	res->n_challenges = j->n_chals;
}

/* http-01 answered by the device. A challenge still to be answered is
 * answered only when this very request carries the device's
 * acknowledgement of its token (challenges_ready): an acknowledgement
 * from before a restart says nothing about whether the device serves it
 * now. Until then res becomes PENDING with the challenges. With the
 * acknowledgement, it is made durable in the job (acme.ack) and only then
 * are the challenges answered. 1 when res is set, 0 to go on, -1 with
 * j->err on failure (*rc says which). */
static int agent_step(struct job *j, struct fg_issue_result *res, enum acme_rc *rc)
{
	size_t need = 0, ready = 0;
	for (size_t i = 0; i < j->n_chals; i++) {
		if (j->chal_urls[i][0] == 0)
			continue;       /* answered already: the CA is validating */
		need++;
		ready += req_ready(j->req, j->chals[i].token);
	}
	if (need == 0)
		return 0;
	if (ready < need) {
		/* the device's acknowledgement reaches the plugin at once
		 * (the host does not wait for retry_after then); retry_after
		 * paces the poller and a device that comes back without one */
		chals_to_result(j, res);
		fgp_set_result(res, FG_ISSUE_PENDING, j->a->poll_interval, "serve the http-01 challenge%s for %s%s, then send the request again",
			   j->n_chals > 1 ? "s" : "", j->chals[0].identifier, j->n_chals > 1 ? " and more" : "");
		alog(j->a, FG_LEVEL_INFO, j->req->request_id, "backend %s: %zu http-01 challenge(s) handed to the device",
		     j->a->name, j->n_chals);
		return 1;
	}
	for (size_t i = 0; i < j->n_chals; i++) {
		if (j->chal_urls[i][0] && jstate_add_line(j, "acme.ack", j->chals[i].token) != 0) {
			*rc = ACME_RETRY;
			return -1;
		}
	}
	for (size_t i = 0; i < j->n_chals; i++) {
		if (j->chal_urls[i][0] == 0)
			continue;
		alog(j->a, FG_LEVEL_INFO, j->req->request_id, "backend %s: the device serves http-01 for %s; answering",
		     j->a->name, j->chals[i].identifier);
		if ((*rc = answer_challenge(j, j->chal_urls[i])) != ACME_OK)
			return -1;
		j->chal_urls[i][0] = 0;
	}
	return 0;
}

/* Moves one authorization towards valid (RFC 8555 7.5) with the job's
 * challenge mode:
 *  - http-01-gateway: the key authorization is published on the gateway's
 *    HTTP side (again on every pass, so a restarted gateway serves it),
 *    then the challenge is answered with {} (7.5.1);
 *  - dns-01: the hook publishes the TXT record (once: the job remembers
 *    it), then the challenge is answered;
 *  - http-01-agent: the challenge is collected for the device (agent_step
 *    answers it after the device's acknowledgement).
 * ACME_OK when the authorization is valid or on its way. */
static enum acme_rc authorize(struct job *j, const char *url)
{
	json_t *az = NULL;
	char ka[256], what[300];
	enum acme_rc rc = job_post(j, url, NULL, &az);
	if (rc != ACME_OK)
		return rc;
	const char *st = json_string_value(json_object_get(az, "status"));
	const char *ident = json_string_value(json_object_get(json_object_get(az, "identifier"), "value"));
	if (st == NULL)
		st = "";
	if (ident == NULL)
		ident = "?";
	if (strcmp(st, "valid") == 0)
		goto out;
	if (strcmp(st, "pending") != 0) {
		/* invalid, deactivated, expired, revoked: find the reason */
		json_t *chs = json_object_get(az, "challenges"), *ch;
		size_t i;
		const char *type = "";
		fgp_seterr(j->err, sizeof j->err, "the ACME CA's authorization for %s is %s", ident, st);
		json_array_foreach(chs, i, ch) {
			json_t *e = json_object_get(ch, "error");
			if (json_is_object(e)) {
				snprintf(what, sizeof what, "%s for %s",
					 json_string_value(json_object_get(ch, "type")) ?: "challenge", ident);
				problem_text(e, what, j->err, sizeof j->err, &type);
				break;
			}
		}
		rc = transient_type(type) ? ACME_RETRY : ACME_FINAL;
		goto out;
	}
	const char *want = j->mode == CH_DNS ? "dns-01" : "http-01";
	json_t *chs = json_object_get(az, "challenges"), *ch;
	size_t i;
	const char *curl_ = NULL, *cst = NULL, *token = NULL;
	char offered[128] = "";
	json_array_foreach(chs, i, ch) {
		const char *t = json_string_value(json_object_get(ch, "type"));
		if (t == NULL)
			continue;
		if (strlen(offered) + strlen(t) + 3 < sizeof offered)
			snprintf(offered + strlen(offered), sizeof offered - strlen(offered), "%s%s",
				 offered[0] ? ", " : "", t);
		if (strcmp(t, want) == 0 && curl_ == NULL) {
			curl_ = json_string_value(json_object_get(ch, "url"));
			cst = json_string_value(json_object_get(ch, "status"));
			token = json_string_value(json_object_get(ch, "token"));
		}
	}
	if (curl_ == NULL) {
		fgp_seterr(j->err, sizeof j->err, "the ACME CA offers no %s challenge for %s (it offers %s); choose another with the backend's challenge setting or the policy's acme_challenge",
		       want, ident, offered[0] ? offered : "none");
		rc = ACME_FINAL;
		goto out;
	}
	if (job_thumb(j) != 0) {
		rc = ACME_RETRY;
		goto out;
	}
	if (token == NULL || acme_key_authorization(token, j->thumb, ka, sizeof ka) != 0 ||
	    strlen(ident) >= sizeof j->chals[0].identifier || strcspn(ident, " \t\r\n") != strlen(ident)) {
		fgp_seterr(j->err, sizeof j->err, "the ACME CA's %s challenge for %s has a malformed token or identifier",
		       want, ident);
		rc = ACME_FINAL;
		goto out;
	}
	if (cst != NULL && strcmp(cst, "valid") == 0)
		goto out;
	int answer = cst == NULL || strcmp(cst, "pending") == 0;
	switch (j->mode) {
	case CH_HTTP_GATEWAY:
		if (!HOST_HAS(j->a->host, http01_withdraw) || j->a->host->http01_publish == NULL) {
			fgp_seterr(j->err, sizeof j->err, "this gateway cannot serve http-01 challenges (it is older than the acme plugin); update fleetgated");
			rc = ACME_FINAL;
			goto out;
		}
		if (jstate_add_line(j, "acme.http01", token) != 0) {
			rc = ACME_RETRY;
			goto out;
		}
		if (j->a->host->http01_publish(j->a->host->ctx, token, ka) != 0) {
			fgp_seterr(j->err, sizeof j->err, "cannot serve the http-01 answer for %s: the gateway has no HTTP side; set http = { listen = \"0.0.0.0:80\" } in fleetgated.conf (the CA connects to port 80 of %s), or choose another challenge",
			       ident, ident);
			rc = ACME_RETRY;
			goto out;
		}
		break;
	case CH_DNS: {
		char val[ACME_B64_SHA256_LEN + 1], line[400];
		char *ok = jstate_get(j, "acme.dns.ok");
		int presented = ok != NULL && has_line(ok, line_of(line, sizeof line, ident, ka, val));
		if (ok == NULL) {
			fgp_seterr(j->err, sizeof j->err, "cannot read the ACME challenge state from the job store");
			rc = ACME_RETRY;
			goto out;
		}
		free(ok);
		if (!presented) {
			if (j->a->dns_hook[0] == 0) {
				fgp_seterr(j->err, sizeof j->err, "backend %s: dns-01 was chosen, but the backend has no dns_hook; set dns_hook = \"/path/to/command\" or choose another challenge",
				       j->a->name);
				rc = ACME_FINAL;
				goto out;
			}
			/* acme.dns (what cleanup removes) is written before
			 * the hook runs, in case it fails halfway;
			 * acme.dns.ok after it succeeded */
			if (jstate_add_line(j, "acme.dns", line) != 0 || dns_hook(j, "present", ident, val) != 0 ||
			    jstate_add_line(j, "acme.dns.ok", line) != 0) {
				rc = ACME_RETRY;
				goto out;
			}
		}
		break;
	}
	case CH_HTTP_AGENT:
		if (!REQ_HAS(j->req, n_challenges_ready)) {
			fgp_seterr(j->err, sizeof j->err, "this gateway cannot hand challenges to devices (it is older than the acme plugin); update fleetgated");
			rc = ACME_FINAL;
			goto out;
		}
		if (j->n_chals >= MAX_CHALS) {
			fgp_seterr(j->err, sizeof j->err, "more than %d names for http-01-agent in one order", MAX_CHALS);
			rc = ACME_FINAL;
			goto out;
		}
		struct fg_challenge *c = &j->chals[j->n_chals];
		memset(c, 0, sizeof *c);
		snprintf(c->type, sizeof c->type, "http-01");
		snprintf(c->identifier, sizeof c->identifier, "%s", ident);
		snprintf(c->token, sizeof c->token, "%s", token);
		snprintf(c->key_authorization, sizeof c->key_authorization, "%s", ka);
		snprintf(j->chal_urls[j->n_chals], sizeof j->chal_urls[0], "%s", answer ? curl_ : "");
		j->n_chals++;
		answer = 0;     /* after the device's acknowledgement */
		break;
	default:
		break;
	}
	if (answer) {
		alog(j->a, FG_LEVEL_INFO, j->req->request_id, "backend %s: answering %s for %s (%s, token %s)", j->a->name,
		     want, ident, chal_names[j->mode], token);
		rc = answer_challenge(j, curl_);
	}
out:
	json_decref(az);
	return rc;
}

/* Parses a PEM chain (leaf first, RFC 8555 9.1) into res: the leaf must
 * certify the CSR's key and name only what the policy decided. */
static void take_chain(struct job *j, const char *pem, size_t len, EVP_PKEY *csrkey,
		       struct fg_issue_result *res)
{
	BIO *b = BIO_new_mem_buf(pem, (int)len);
	STACK_OF(X509) *certs = sk_X509_new_null();
	X509 *x;
	char msg[400];
	while (b != NULL && certs != NULL && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
		if (!sk_X509_push(certs, x))
			X509_free(x);
	ERR_clear_error();
	BIO_free(b);
	int n = certs ? sk_X509_num(certs) : 0;
	if (n == 0) {
		fgp_set_result(res, FG_ISSUE_ERROR, RETRY_SECONDS, "the ACME CA's certificate for order %s cannot be read",
			   j->order);
		goto out;
	}
	X509 *leaf = sk_X509_value(certs, 0);
	if (EVP_PKEY_eq(X509_get0_pubkey(leaf), csrkey) != 1) {
		ERR_clear_error();
		fgp_set_result(res, FG_ISSUE_REJECTED, 0, "the ACME CA's certificate for order %s does not certify the device's key",
			   j->order);
		goto out;
	}
	if (fgp_names_granted(leaf, j->req, FGP_CN_MAY_COPY_SAN, msg, sizeof msg) != 0) {
		alog(j->a, FG_LEVEL_ERROR, j->req->request_id,
		     "backend %s: %s; the certificate is withheld from the device: revoke it at the CA", j->a->name, msg);
		fgp_set_result(res, FG_ISSUE_REJECTED, 0, "%s", msg);
		goto out;
	}
	res->chain_der = calloc((size_t)n, sizeof *res->chain_der);
	res->chain_len = calloc((size_t)n, sizeof *res->chain_len);
	if (res->chain_der == NULL || res->chain_len == NULL)
		goto oom;
	for (int i = 0; i < n; i++) {
		unsigned char *der = NULL;
		int l = i2d_X509(sk_X509_value(certs, i), &der);
		unsigned char *copy = l > 0 ? malloc((size_t)l) : NULL;
		if (copy == NULL) {
			OPENSSL_free(der);
			goto oom;
		}
		memcpy(copy, der, (size_t)l);
		OPENSSL_free(der);
		if (i == 0) {
			res->cert_der = copy;
			res->cert_len = (size_t)l;
		} else {
			res->chain_der[res->n_chain] = copy;
			res->chain_len[res->n_chain++] = (size_t)l;
		}
	}
	fgp_set_result(res, FG_ISSUE_OK, 0, "issued by the ACME CA (order %s)", j->order);
	goto out;
oom:
	result_reset(j->a, res);
	fgp_set_result(res, FG_ISSUE_ERROR, RETRY_SECONDS, "out of memory");
out:
	sk_X509_pop_free(certs, X509_free);
}

/* ---- ARI: renewal information (RFC 9773) ---- */

/* The certID of a certificate (RFC 9773 4.1): base64url of the
 * keyIdentifier of its authorityKeyIdentifier, ".", base64url of the
 * serial number's DER content octets (a leading 0x00 kept). Malloc'd, or
 * NULL with err (a certificate without an AKI keyIdentifier has none). */
static char *ari_cert_id(X509 *x, char *err, size_t errlen)
{
	const ASN1_OCTET_STRING *kid = X509_get0_authority_key_id(x);
	const ASN1_INTEGER *sn = X509_get0_serialNumber(x);
	unsigned char *der = NULL;
	char *k64 = NULL, *s64 = NULL, *out = NULL;
	long clen = 0;
	int tag = 0, cls = 0;
	if (kid == NULL || ASN1_STRING_length(kid) <= 0) {
		fgp_seterr(err, errlen, "the certificate has no authority key identifier, so it has no ARI certID");
		goto out;
	}
	int n = sn ? i2d_ASN1_INTEGER(sn, &der) : -1;
	const unsigned char *q = der;
	if (n <= 0 || (ASN1_get_object(&q, &clen, &tag, &cls, n) & 0x80) || tag != V_ASN1_INTEGER || clen <= 0) {
		fgp_ssl_err(err, errlen, "cannot encode the certificate's serial number");
		goto out;
	}
	if ((k64 = b64url(ASN1_STRING_get0_data(kid), (size_t)ASN1_STRING_length(kid))) == NULL ||
	    (s64 = b64url(q, (size_t)clen)) == NULL || asprintf(&out, "%s.%s", k64, s64) < 0) {
		out = NULL;
		fgp_seterr(err, errlen, "out of memory");
	}
out:
	ERR_clear_error();
	OPENSSL_free(der);
	free(k64);
	free(s64);
	return out;
}

/* An RFC 3339 date-time ("2025-01-02T04:00:00Z", fractional seconds and a
 * numeric offset allowed) as Unix seconds. 0, or -1 when it is not one. */
static int rfc3339_time(const char *text, int64_t *out)
{
	struct tm tm;
	memset(&tm, 0, sizeof tm);
	const char *p = text ? strptime(text, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
	if (p == NULL)
		return -1;
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return -1;
		while (isdigit((unsigned char)*p))
			p++;
	}
	long off = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int hh, mm, used = 0;
		if (sscanf(p + 1, "%2d:%2d%n", &hh, &mm, &used) != 2 || used != 5 || hh > 23 || mm > 59)
			return -1;
		off = (hh * 3600L + mm * 60L) * (*p == '-' ? -1 : 1);
		p += 6;
	} else {
		return -1;
	}
	if (*p != 0)
		return -1;
	time_t t = timegm(&tm);
	if (t == (time_t)-1)
		return -1;
	*out = (int64_t)t - off;
	return 0;
}

/* The suggestedWindow of a RenewalInfo object (RFC 9773 4.2). 0 with
 * start < end (and the explanationURL, "" without one), or -1 with what
 * is wrong when the answer is not one. */
static int ari_window(const char *body, int64_t *start, int64_t *end, char *expl, size_t expllen, char *err,
		      size_t errlen)
{
	json_t *j = json_loads(body ? body : "", 0, NULL);
	json_t *w = json_object_get(j, "suggestedWindow");
	const char *x = json_string_value(json_object_get(j, "explanationURL"));
	int rc = -1;
	snprintf(expl, expllen, "%s", x ? x : "");
	if (j == NULL)
		fgp_seterr(err, errlen, "the answer is not JSON");
	else if (!json_is_object(w))
		fgp_seterr(err, errlen, "the answer has no suggestedWindow object");
	else if (rfc3339_time(json_string_value(json_object_get(w, "start")), start) != 0 ||
		 rfc3339_time(json_string_value(json_object_get(w, "end")), end) != 0)
		fgp_seterr(err, errlen, "suggestedWindow start or end is not an RFC 3339 date-time");
	else if (*start >= *end)
		fgp_seterr(err, errlen, "suggestedWindow ends before it starts (RFC 9773 4.2: invalid)");
	else
		rc = 0;
	json_decref(j);
	return rc;
}

/* When the CA's directory has renewalInfo: asks it about the certificate
 * just issued and, with a valid window, puts a time drawn uniformly from
 * it (RFC 9773 4.2) in res->renew_after, for the agent's schedule. An
 * answer that is missing or wrong only costs the suggestion: the agent's
 * own schedule applies. */
static void ari_advise(struct job *j, const unsigned char *der, size_t len, struct fg_issue_result *res)
{
	struct acme *a = j->a;
	struct resp r = { .retry_after = -1 };
	char base[1024], err[512] = "", expl[512] = "", *id = NULL, *url = NULL;
	const unsigned char *q = der;
	X509 *x = NULL;
	int64_t start, end;
	uint64_t rnd = 0;

	pthread_mutex_lock(&a->mu);
	snprintf(base, sizeof base, "%s", a->renewal_info);
	pthread_mutex_unlock(&a->mu);
	if (base[0] == 0 || !FG_RESULT_HAS(a->host, renew_after))
		return;
	if ((x = d2i_X509(NULL, &q, (long)len)) == NULL || (id = ari_cert_id(x, err, sizeof err)) == NULL ||
	    asprintf(&url, "%s%s%s", base, base[strlen(base) - 1] == '/' ? "" : "/", id) < 0) {
		url = NULL;
		ERR_clear_error();
		goto out;
	}
	if (http(a, "GET", url, NULL, "application/json", &r, err, sizeof err) == 0 && r.code != 200)
		fgp_seterr(err, sizeof err, "HTTP %ld", r.code);
	if (err[0] || ari_window((const char *)r.body.p, &start, &end, expl, sizeof expl, err, sizeof err) != 0) {
		alog(a, FG_LEVEL_WARN, j->req->request_id,
		     "backend %s: no usable renewal information at %s (%s); the agent's own schedule applies", a->name,
		     url, err);
		goto out;
	}
	if (a->host->random(a->host->ctx, &rnd, sizeof rnd) != 0)
		rnd = 0;
	res->renew_after = start + (int64_t)(rnd % (uint64_t)(end - start));
	/* RFC 9773 4.2: a time in the past means renew now */
	int64_t now = (int64_t)time(NULL);
	if (res->renew_after < now)
		res->renew_after = now;
	alog(a, FG_LEVEL_INFO, j->req->request_id,
	     "backend %s: the ACME CA suggests renewal between %lld and %lld; chosen %lld%s%s%s", a->name,
	     (long long)start, (long long)end, (long long)res->renew_after,
	     end <= now ? " (the window is past: renew now)" : "", expl[0] ? "; the CA explains at " : "", expl);
out:
	X509_free(x);
	free(id);
	free(url);
	resp_clear(&r);
}

/* The request must be expressible as ACME identifiers. 0 or -1 with msg. */
static int names_orderable(const struct fg_issue_request *req, char *msg, size_t msglen)
{
	if (req->n_email > 0) {
		fgp_seterr(msg, msglen, "ACME certifies DNS names and IP addresses only; the policy decided e-mail name %s",
		       req->emails[0]);
		return -1;
	}
	if (req->n_dns + req->n_ip == 0) {
		fgp_seterr(msg, msglen, "ACME needs at least one DNS name or IP address; the policy decided none (set dns = { ... })");
		return -1;
	}
	if (req->subject_cn != NULL && req->subject_cn[0] && !fgp_in_list(req->subject_cn, req->dns_names, req->n_dns) &&
	    !fgp_in_list(req->subject_cn, req->ip_names, req->n_ip)) {
		fgp_seterr(msg, msglen, "an ACME CA certifies a subject CN only when it is also one of the DNS names or IPs; '%s' is not (add it to dns, or leave cn empty)",
		       req->subject_cn);
		return -1;
	}
	return 0;
}

/* The stored order is gone at the CA (HTTP 404: expired and purged, or a
 * CA that lost its state while still knowing the account): forget it so
 * that the job orders again, once per call. The device still receives
 * one certificate: the job delivers only what the new order issues.
 * 1 when the caller should order again. */
static int order_gone(struct job *j, int again)
{
	if (again || j->http_code != 404)
		return 0;
	alog(j->a, FG_LEVEL_WARN, j->req->request_id, "backend %s: the ACME CA no longer knows order %s (%s); ordering again",
	     j->a->name, j->order, j->err);
	if (j->a->host->job_put(j->req->job, "acme.order", (const unsigned char *)"", 0) != 0)
		return 0;
	j->order[0] = 0;
	return 1;
}

/* issue and poll: drives the job's order as far as it goes within
 * inline_wait seconds. The order URL is in the job, so a resumed or polled
 * job continues its order rather than placing another. */
static int run_job(void *state, const struct fg_issue_request *req, struct fg_issue_result *res)
{
	struct acme *a = state;
	struct job j = { .a = a, .req = req, .retry_after = -1 };
	const unsigned char *q = req->csr_der;
	X509_REQ *csr = d2i_X509_REQ(NULL, &q, (long)req->csr_len);
	unsigned char *v = NULL;
	size_t vlen = 0;
	json_t *o = NULL;
	char msg[400];
	enum acme_rc rc;
	int64_t deadline = a->host->now(a->host->ctx) + a->inline_wait;

	memset(res, 0, result_size(a));
	j.mode = job_mode(a, req);
	if (csr == NULL) {
		ERR_clear_error();
		fgp_set_result(res, FG_ISSUE_REJECTED, 0, "the stored CSR cannot be read");
		return 0;
	}
	if (names_orderable(req, msg, sizeof msg) != 0) {
		fgp_set_result(res, FG_ISSUE_REJECTED, 0, "%s", msg);
		goto out;
	}
	int g = a->host->job_get(req->job, "acme.order", &v, &vlen);
	if (g < 0) {
		fgp_set_result(res, FG_ISSUE_ERROR, RETRY_SECONDS, "cannot read the ACME job state");
		goto out;
	}
	if (g == 1 && vlen > 0 && vlen < sizeof j.order) {
		memcpy(j.order, v, vlen);
		j.order[vlen] = 0;
	}
	int again = 0;
	long backoff_ms = 25;        /* inline polling without Retry-After */
	char waited_on[16] = "";     /* the order status of the last wait */
start:
	if ((rc = account(a, &j.key, j.kid, sizeof j.kid, j.err, sizeof j.err)) != ACME_OK)
		goto failed;
	if (j.order[0] == 0 && (rc = new_order(&j)) != ACME_OK)
		goto failed;

	for (;;) {
		json_decref(o);
		o = NULL;
		j.n_chals = 0;
		if ((rc = job_post(&j, j.order, NULL, &o)) != ACME_OK) {
			if (order_gone(&j, again)) {
				again = 1;
				EVP_PKEY_free(j.key);
				j.key = NULL;
				goto start;
			}
			goto failed;
		}
		const char *st = json_string_value(json_object_get(o, "status"));
		if (st == NULL)
			st = "";
		if (strcmp(st, "pending") == 0) {
			json_t *azs = json_object_get(o, "authorizations"), *az;
			size_t i;
			json_array_foreach(azs, i, az) {
				const char *u = json_string_value(az);
				if (u != NULL && (rc = authorize(&j, u)) != ACME_OK)
					goto failed;
			}
			if (j.mode == CH_HTTP_AGENT && j.n_chals > 0) {
				int k = agent_step(&j, res, &rc);
				if (k < 0)
					goto failed;
				if (k > 0)
					goto out;
			}
		} else if (strcmp(st, "ready") == 0) {
			challenges_done(&j);    /* every authorization is valid */
			char *csr64 = b64url(req->csr_der, req->csr_len), *payload = NULL;
			json_t *p = csr64 ? json_pack("{s:s}", "csr", csr64) : NULL;
			const char *fin = json_string_value(json_object_get(o, "finalize"));
			free(csr64);
			if (p == NULL || fin == NULL || (payload = json_dumps(p, JSON_COMPACT)) == NULL) {
				json_decref(p);
				fgp_set_result(res, FG_ISSUE_ERROR, RETRY_SECONDS, "cannot finalize ACME order %s (%s)", j.order,
					   fin ? "out of memory" : "it has no finalize URL");
				goto out;
			}
			json_decref(p);
			rc = job_post(&j, fin, payload, NULL);
			free(payload);
			if (rc != ACME_OK)
				goto failed;
			continue;       /* finalize answers with the order: read it again */
		} else if (strcmp(st, "valid") == 0) {
			const char *cu = json_string_value(json_object_get(o, "certificate"));
			struct resp r = { .retry_after = -1 };
			if (cu == NULL) {
				fgp_set_result(res, FG_ISSUE_ERROR, RETRY_SECONDS, "ACME order %s is valid but names no certificate",
					   j.order);
				goto out;
			}
			rc = post(a, j.key, j.kid, cu, NULL, "application/pem-certificate-chain", &r, j.err, sizeof j.err);
			if (rc == ACME_OK) {
				take_chain(&j, r.body.p ? (const char *)r.body.p : "", r.body.n, X509_REQ_get0_pubkey(csr), res);
				if (res->status == FG_ISSUE_OK)
					ari_advise(&j, res->cert_der, res->cert_len, res);
			}
			resp_clear(&r);
			if (rc != ACME_OK)
				goto failed;
			goto out;
		} else if (strcmp(st, "invalid") == 0) {
			const char *type = "";
			json_t *e = json_object_get(o, "error");
			if (json_is_object(e))
				problem_text(e, j.order, j.err, sizeof j.err, &type);
			else
				fgp_seterr(j.err, sizeof j.err, "ACME order %s is invalid", j.order);
			if (transient_type(type)) {
				/* a failed validation may pass next time: order again */
				challenges_done(&j);
				a->host->job_put(req->job, "acme.order", (const unsigned char *)"", 0);
				a->host->job_put(req->job, "acme.ack", (const unsigned char *)"", 0);
				fgp_set_result(res, FG_ISSUE_ERROR, RETRY_SECONDS, "%s", j.err);
			} else {
				fgp_set_result(res, FG_ISSUE_REJECTED, 0, "%s", j.err);
			}
			alog(a, FG_LEVEL_WARN, req->request_id, "backend %s: %s", a->name, j.err);
			goto out;
		} else if (strcmp(st, "processing") != 0) {
			fgp_set_result(res, FG_ISSUE_ERROR, RETRY_SECONDS, "ACME order %s has unknown status '%s'", j.order, st);
			goto out;
		}
		/* pending (answered) or processing: wait for the CA, inline
		 * while the budget lasts, then hand the job to the poller */
		long wait = j.retry_after >= 0 ? j.retry_after : 1;
		if (wait < 1)
			wait = 1;
		if (a->host->now(a->host->ctx) + wait > deadline) {
			uint32_t ra = j.retry_after >= 0 ? (uint32_t)j.retry_after : a->poll_interval;
			alog(a, FG_LEVEL_INFO, req->request_id, "backend %s: ACME order %s is %s; asking again in %u s",
			     a->name, j.order, st, ra ? ra : 1);
			fgp_set_result(res, FG_ISSUE_PENDING, ra ? ra : 1, "ACME order %s is %s at the CA", j.order, st);
			if (j.mode == CH_HTTP_AGENT)
				chals_to_result(&j, res);   /* a restarted device serves them again */
			goto out;
		}
		/* XXX sleeps on a worker thread. Without a Retry-After the
		 * order is asked again after 25 ms, doubling up to 1 s, and
		 * from 25 ms again at each new status: a CA that validates at
		 * once (pebble) is not kept waiting a whole second per step. */
		struct timespec ts;
		if (strcmp(waited_on, st) != 0) {
			/* a new stage (authorizations, then processing) starts
			 * again at the shortest interval */
			snprintf(waited_on, sizeof waited_on, "%s", st);
			backoff_ms = 25;
		}
		if (j.retry_after >= 0) {
			ts.tv_sec = wait > 2 ? 2 : wait;
			ts.tv_nsec = 0;
		} else {
			ts.tv_sec = backoff_ms / 1000;
			ts.tv_nsec = (backoff_ms % 1000) * 1000000L;
			backoff_ms = backoff_ms * 2 > 1000 ? 1000 : backoff_ms * 2;
		}
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
	}

failed:
	if (rc == ACME_RETRY && !again && strstr(j.err, "accountDoesNotExist") != NULL) {
		/* the CA forgot the account (account_lost dropped it): register
		 * again at once; an order of the old account is no longer ours */
		again = 1;
		challenges_done(&j);
		a->host->job_put(req->job, "acme.ack", (const unsigned char *)"", 0);
		EVP_PKEY_free(j.key);
		j.key = NULL;
		j.order[0] = 0;
		if (a->host->job_put(req->job, "acme.order", (const unsigned char *)"", 0) == 0)
			goto start;
	}
	if (rc == ACME_RETRY) {
		uint32_t ra = j.retry_after > 0 ? (uint32_t)j.retry_after : RETRY_SECONDS;
		alog(a, FG_LEVEL_WARN, req->request_id, "backend %s: %s; will try again in %u s", a->name, j.err, ra);
		if (strstr(j.err, "rateLimited") != NULL)
			fgp_set_result(res, FG_ISSUE_ERROR, ra, "%s; the CA's rate limit: the request is kept and asked again in %u s%s",
				   j.err, ra, j.retry_after > 0 ? " (the CA's Retry-After)" : "");
		else
			fgp_set_result(res, FG_ISSUE_ERROR, ra, "%s", j.err);
	} else {
		alog(a, FG_LEVEL_WARN, req->request_id, "backend %s: refused: %s", a->name, j.err);
		fgp_set_result(res, FG_ISSUE_REJECTED, 0, "%s", j.err);
	}
out:
	if (res->status == FG_ISSUE_OK || res->status == FG_ISSUE_REJECTED)
		challenges_done(&j);
	json_decref(o);
	free(v);
	EVP_PKEY_free(j.key);
	X509_REQ_free(csr);
	return 0;
}

static int acme_csr_needs(void *state, const struct fg_issue_request *req, struct fg_csr_needs *needs,
			  char *err, size_t errlen)
{
	(void)state;
	memset(needs, 0, sizeof *needs);
	if (names_orderable(req, err, errlen) != 0)
		return -1;
	needs->names_from_csr = 1;
	return 0;
}

/* Fetches the PEM certificates at root_url into out. 0 or -1 with err. */
static int roots_fetch(struct acme *a, struct fg_cert_list *out, char *err, size_t errlen)
{
	struct resp r = { .retry_after = -1 };
	BIO *b = NULL;
	X509 *x;
	int rc = -1;
	memset(out, 0, sizeof *out);
	if (http(a, "GET", a->root_url, NULL, NULL, &r, err, errlen) != 0)
		goto out;
	if (r.code != 200) {
		fgp_seterr(err, errlen, "backend %s: root_url %s answered HTTP %ld", a->name, a->root_url, r.code);
		goto out;
	}
	if ((b = BIO_new_mem_buf(r.body.p ? (const char *)r.body.p : "", (int)r.body.n)) == NULL)
		goto oom;
	while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
		unsigned char *der = NULL;
		int l = i2d_X509(x, &der);
		X509_free(x);
		unsigned char **nd = realloc(out->der, (out->n + 1) * sizeof *nd);
		if (nd != NULL)
			out->der = nd;
		size_t *nl = nd ? realloc(out->len, (out->n + 1) * sizeof *nl) : NULL;
		if (nl != NULL)
			out->len = nl;
		unsigned char *copy = l > 0 && nl ? malloc((size_t)l) : NULL;
		if (copy == NULL) {
			OPENSSL_free(der);
			goto oom;
		}
		memcpy(copy, der, (size_t)l);
		OPENSSL_free(der);
		out->der[out->n] = copy;
		out->len[out->n++] = (size_t)l;
	}
	ERR_clear_error();
	if (out->n == 0) {
		fgp_seterr(err, errlen, "backend %s: root_url %s holds no PEM certificate", a->name, a->root_url);
		goto out;
	}
	rc = 0;
	goto out;
oom:
	fgp_seterr(err, errlen, "out of memory");
out:
	if (rc != 0)
		fg_cert_list_clear(out);
	BIO_free(b);
	resp_clear(&r);
	return rc;
}

/* A copy of list into out; 0 or -1. */
static int list_copy(const struct fg_cert_list *list, struct fg_cert_list *out)
{
	memset(out, 0, sizeof *out);
	if ((out->der = calloc(list->n, sizeof *out->der)) == NULL ||
	    (out->len = calloc(list->n, sizeof *out->len)) == NULL)
		goto fail;
	for (size_t i = 0; i < list->n; i++) {
		if ((out->der[i] = malloc(list->len[i])) == NULL)
			goto fail;
		memcpy(out->der[i], list->der[i], list->len[i]);
		out->len[i] = list->len[i];
		out->n = i + 1;
	}
	return 0;
fail:
	fg_cert_list_clear(out);
	return -1;
}

/* ACME has no CA certificate resource: with root_url (pebble's management
 * interface has one) the PEM there is the answer, reused for cache_ttl
 * seconds (the gateway asks on every check-in), and the last good answer
 * is used while root_url cannot be read. */
static int acme_cacerts(void *state, struct fg_cert_list *out, char *err, size_t errlen)
{
	struct acme *a = state;
	struct fg_cert_list fresh;
	int rc = -1;
	memset(out, 0, sizeof *out);
	if (a->root_url[0] == 0) {
		fgp_seterr(err, errlen, "backend %s: ACME has no way to fetch the CA certificate; set root_url to where the CA publishes its root (PEM)",
		       a->name);
		return -1;
	}
	int64_t now = a->host->now(a->host->ctx);
	pthread_mutex_lock(&a->mu);
	int stale = a->roots.n == 0 || now - a->roots_fetched >= a->cache_ttl || now < a->roots_fetched;
	pthread_mutex_unlock(&a->mu);
	if (stale) {
		if (roots_fetch(a, &fresh, err, errlen) == 0) {
			pthread_mutex_lock(&a->mu);
			fg_cert_list_clear(&a->roots);
			a->roots = fresh;
			a->roots_fetched = now;
			pthread_mutex_unlock(&a->mu);
		} else {
			alog(a, FG_LEVEL_WARN, NULL, "backend %s: %s", a->name, err);
		}
	}
	pthread_mutex_lock(&a->mu);
	if (a->roots.n > 0) {
		rc = list_copy(&a->roots, out);
		if (rc != 0)
			fgp_seterr(err, errlen, "out of memory");
	}
	pthread_mutex_unlock(&a->mu);
	return rc;
}

/* revokeCert (RFC 8555 7.6): the certificate (base64url DER) and the
 * reason code (RFC 5280 5.3.1, the same numbers as enum fg_revoke_reason),
 * signed by the account key with its kid. The CA accepts it from the
 * account that ordered the certificate. A certificate the CA already
 * revoked (alreadyRevoked) counts as revoked. 0, or -1 with err saying
 * whether to try again (the host has marked the certificate revoked in its
 * store either way). */
static int acme_revoke(void *state, const unsigned char *cert_der, size_t cert_len,
		       enum fg_revoke_reason reason, char *err, size_t errlen)
{
	struct acme *a = state;
	EVP_PKEY *key = NULL;
	char kid[1024], url[1024], *c64 = NULL, *payload = NULL;
	json_t *p = NULL;
	struct resp r = { .retry_after = -1 };
	int rc = -1;
	enum acme_rc arc;

	if ((arc = account(a, &key, kid, sizeof kid, err, errlen)) != ACME_OK)
		goto failed;
	pthread_mutex_lock(&a->mu);
	snprintf(url, sizeof url, "%s", a->revoke_cert);
	pthread_mutex_unlock(&a->mu);
	if (url[0] == 0) {
		fgp_seterr(err, errlen, "the ACME CA's directory has no revokeCert");
		arc = ACME_FINAL;
		goto failed;
	}
	if ((c64 = b64url(cert_der, cert_len)) == NULL ||
	    (p = json_pack("{s:s, s:i}", "certificate", c64, "reason", (int)reason)) == NULL ||
	    (payload = json_dumps(p, JSON_COMPACT)) == NULL) {
		fgp_seterr(err, errlen, "out of memory");
		arc = ACME_RETRY;
		goto failed;
	}
	arc = post(a, key, kid, url, payload, NULL, &r, err, errlen);
	if (arc != ACME_OK && strstr(err, "alreadyRevoked") != NULL) {
		alog(a, FG_LEVEL_INFO, NULL, "backend %s: the ACME CA had already revoked the certificate", a->name);
		arc = ACME_OK;
	}
	if (arc == ACME_OK) {
		alog(a, FG_LEVEL_INFO, NULL, "backend %s: the ACME CA revoked a certificate (reason %d)", a->name,
		     (int)reason);
		rc = 0;
		goto out;
	}
	if (strstr(err, "accountDoesNotExist") != NULL)
		account_lost(a, kid);
failed:
	{
		char base[600];
		snprintf(base, sizeof base, "%s", err);
		fgp_seterr(err, errlen, "backend %s: the ACME CA did not revoke the certificate: %s; %s", a->name, base,
		       arc == ACME_RETRY ? "try again when the CA answers, or revoke it at the CA"
					 : "revoke it at the CA with the account that ordered it");
	}
out:
	EVP_PKEY_free(key);
	json_decref(p);
	free(payload);
	free(c64);
	resp_clear(&r);
	return rc;
}

/* ---- operator commands: account key rollover (RFC 8555 7.3.5) ---- */

/* PEM (PKCS#8) of key, malloc'd and NUL-terminated, length in *len; NULL
 * on error. The caller wipes and frees it. */
static char *key_pem(EVP_PKEY *key, size_t *len)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *p = NULL, *out = NULL;
	long n;
	if (b != NULL && PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) == 1 &&
	    (n = BIO_get_mem_data(b, &p)) > 0 && (out = malloc((size_t)n + 1)) != NULL) {
		memcpy(out, p, (size_t)n);
		out[n] = 0;
		*len = (size_t)n;
		OPENSSL_cleanse(p, (size_t)n);
	}
	ERR_clear_error();
	BIO_free(b);
	return out;
}

/* The RFC 7638 JWK thumbprint of key, base64url, malloc'd; NULL on error. */
static char *thumbprint(EVP_PKEY *key)
{
	json_t *jwk = jwk_of(key);
	char *text = jwk ? json_dumps(jwk, JSON_COMPACT | JSON_SORT_KEYS) : NULL, *out = NULL;
	unsigned char dg[32];
	if (text != NULL && EVP_Digest(text, strlen(text), dg, NULL, EVP_sha256(), NULL) == 1)
		out = b64url(dg, sizeof dg);
	json_decref(jwk);
	free(text);
	return out;
}

/* Asks the CA which account key belongs to (newAccount with
 * onlyReturnExisting, RFC 8555 7.3.1). ACME_OK with the account URL in
 * url; ACME_FINAL when the CA knows no account with that key. */
static enum acme_rc account_lookup(struct acme *a, EVP_PKEY *key, char *url, size_t urllen, char *err,
				   size_t errlen)
{
	struct resp r = { .retry_after = -1 };
	char na[1024];
	pthread_mutex_lock(&a->mu);
	snprintf(na, sizeof na, "%s", a->new_account);
	pthread_mutex_unlock(&a->mu);
	enum acme_rc rc = post(a, key, NULL, na, "{\"onlyReturnExisting\":true}", NULL, &r, err, errlen);
	if (rc == ACME_OK)
		snprintf(url, urllen, "%s", r.location);
	else if (strstr(err, "accountDoesNotExist") != NULL)
		rc = ACME_FINAL;
	resp_clear(&r);
	return rc;
}

/* Makes pem (the new key) the account key, in the state and in memory,
 * and forgets the pending one. 0 or -1 with err. */
static int key_adopt(struct acme *a, EVP_PKEY *key, const char *pem, size_t len, char *err, size_t errlen)
{
	unsigned char dg[32];
	if (EVP_Digest(pem, len, dg, NULL, EVP_sha256(), NULL) != 1 ||
	    a->host->state_put(a->host->ctx, "account.key", (const unsigned char *)pem, len) != 0) {
		ERR_clear_error();
		fgp_seterr(err, errlen, "backend %s: the CA took the new account key, but it cannot be written to the plugin state; the new key is kept as account.key.next: fix the store and run acme-rollover again, which adopts it",
		       a->name);
		return -1;
	}
	a->host->state_put(a->host->ctx, "account.key.next", (const unsigned char *)"", 0);
	pthread_mutex_lock(&a->mu);
	EVP_PKEY_free(a->key);
	EVP_PKEY_up_ref(key);
	a->key = key;
	memcpy(a->key_digest, dg, sizeof dg);
	pthread_mutex_unlock(&a->mu);
	return 0;
}

/* A rollover that was interrupted after the new key was kept as
 * account.key.next: when the CA already knows the account by that key,
 * it is adopted (1); when not, it is dropped (0). -1 with err when the
 * CA cannot tell now. */
static int rollover_resume(struct acme *a, const char *kid, char **out, char *err, size_t errlen)
{
	unsigned char *pem = NULL;
	size_t len = 0;
	BIO *b = NULL;
	EVP_PKEY *k = NULL;
	char url[1024] = "";
	int rc = 0;
	int g = a->host->state_get(a->host->ctx, "account.key.next", &pem, &len);
	if (g < 0) {
		fgp_seterr(err, errlen, "backend %s: cannot read account.key.next from the plugin state", a->name);
		return -1;
	}
	if (g == 0 || len == 0)
		goto out;
	if ((b = BIO_new_mem_buf(pem, (int)len)) == NULL ||
	    (k = PEM_read_bio_PrivateKey(b, NULL, NULL, NULL)) == NULL) {
		ERR_clear_error();
		goto out;       /* unreadable: the new rollover replaces it */
	}
	enum acme_rc lr = account_lookup(a, k, url, sizeof url, err, errlen);
	if (lr == ACME_RETRY) {
		rc = -1;
		goto out;
	}
	if (lr == ACME_OK && strcmp(url, kid) == 0) {
		if (key_adopt(a, k, (const char *)pem, len, err, errlen) != 0) {
			rc = -1;
			goto out;
		}
		if (asprintf(out, "backend %s: an earlier rollover had reached the CA; its key is now the account key of %s",
			     a->name, kid) < 0)
			*out = NULL;
		rc = 1;
	}
out:
	if (pem != NULL) {
		OPENSSL_cleanse(pem, len);
		free(pem);
	}
	BIO_free(b);
	EVP_PKEY_free(k);
	return rc;
}

/* keyChange (RFC 8555 7.3.5): a new P-256 key replaces the account key at
 * the CA. The inner JWS, signed by the new key with its jwk and no nonce,
 * carries {account, oldKey}; the outer one is an ordinary request signed
 * by the old key. The new key is written ahead as account.key.next, so
 * that a rollover cut short after the CA took it can be finished by
 * running the command again (rollover_resume). On success account.key
 * holds the new key; a running gateway reads it at its next request. */
static int rollover(struct acme *a, char **out, char *err, size_t errlen)
{
	EVP_PKEY *old = NULL, *newk = NULL;
	char kid[1024], kc[1024], *pem = NULL, *payload = NULL, *inner = NULL, *tp = NULL;
	size_t pem_len = 0;
	json_t *p = NULL, *oldjwk = NULL;
	struct resp r = { .retry_after = -1 };
	int rc = -1;

	if (account(a, &old, kid, sizeof kid, err, errlen) != ACME_OK)
		goto out;
	pthread_mutex_lock(&a->mu);
	snprintf(kc, sizeof kc, "%s", a->key_change);
	pthread_mutex_unlock(&a->mu);
	if (kc[0] == 0) {
		fgp_seterr(err, errlen, "backend %s: the ACME CA's directory has no keyChange; it cannot roll over account keys",
		       a->name);
		goto out;
	}
	int resumed = rollover_resume(a, kid, out, err, errlen);
	if (resumed != 0) {
		rc = resumed > 0 ? 0 : -1;
		goto out;
	}
	if ((newk = EVP_EC_gen("P-256")) == NULL || (pem = key_pem(newk, &pem_len)) == NULL) {
		fgp_ssl_err(err, errlen, "backend %s: cannot make a new ACME account key", a->name);
		goto out;
	}
	if (a->host->state_put(a->host->ctx, "account.key.next", (unsigned char *)pem, pem_len) != 0) {
		fgp_seterr(err, errlen, "backend %s: cannot write the new account key to the plugin state; nothing was changed",
		       a->name);
		goto out;
	}
	if ((oldjwk = jwk_of(old)) == NULL ||
	    (p = json_pack("{s:s, s:O}", "account", kid, "oldKey", oldjwk)) == NULL ||
	    (payload = json_dumps(p, JSON_COMPACT)) == NULL) {
		fgp_seterr(err, errlen, "out of memory");
		goto out;
	}
	if ((inner = jws(newk, NULL, NULL, kc, payload, err, errlen)) == NULL)
		goto out;
	enum acme_rc prc = post(a, old, kid, kc, inner, NULL, &r, err, errlen);
	if (prc != ACME_OK) {
		char base[600];
		snprintf(base, sizeof base, "%s", err);
		if (prc == ACME_FINAL) {
			a->host->state_put(a->host->ctx, "account.key.next", (const unsigned char *)"", 0);
			fgp_seterr(err, errlen, "backend %s: the CA refused the key rollover (%s); the old key stays in use",
			       a->name, base);
		} else {
			fgp_seterr(err, errlen, "backend %s: the key rollover did not complete (%s); run the command again: it first checks whether the CA took the new key",
			       a->name, base);
		}
		goto out;
	}
	if (key_adopt(a, newk, pem, pem_len, err, errlen) != 0)
		goto out;
	tp = thumbprint(newk);
	if (asprintf(out, "backend %s: account %s now uses a new key (JWK thumbprint %s); the old key is no longer accepted by the CA",
		     a->name, kid, tp ? tp : "?") < 0)
		*out = NULL;
	alog(a, FG_LEVEL_INFO, NULL, "backend %s: ACME account key rolled over (thumbprint %s)", a->name, tp ? tp : "?");
	rc = 0;
out:
	if (pem != NULL) {
		OPENSSL_cleanse(pem, pem_len);
		free(pem);
	}
	EVP_PKEY_free(old);
	EVP_PKEY_free(newk);
	json_decref(p);
	json_decref(oldjwk);
	free(payload);
	free(inner);
	free(tp);
	resp_clear(&r);
	return rc;
}

/* Operator commands (fleetgate backend acme-rollover). */
static int acme_admin(void *state, const char *verb, const char *const *args, size_t n_args, char **out,
		      char *err, size_t errlen)
{
	struct acme *a = state;
	(void)args;
	*out = NULL;
	if (strcmp(verb, "account-rollover") == 0 && n_args == 0)
		return rollover(a, out, err, errlen);
	fgp_seterr(err, errlen, "backend %s: the acme plugin knows no command '%s' (known: account-rollover)", a->name, verb);
	return -1;
}

/* ---- open/close ---- */

/* libcurl's share lock callbacks: one mutex per kind of shared data. */
static void share_lock(CURL *c, curl_lock_data data, curl_lock_access access, void *arg)
{
	struct acme *a = arg;
	(void)c;
	(void)access;
	if ((int)data >= 0 && data < CURL_LOCK_DATA_LAST)
		pthread_mutex_lock(&a->share_mu[data]);
}

static void share_unlock(CURL *c, curl_lock_data data, void *arg)
{
	struct acme *a = arg;
	(void)c;
	if ((int)data >= 0 && data < CURL_LOCK_DATA_LAST)
		pthread_mutex_unlock(&a->share_mu[data]);
}

/* One connection cache and TLS session cache for all of the instance's
 * exchanges (each exchange still has a curl handle of its own, so threads
 * never share one): an order is some ten exchanges with the same server,
 * and a new TLS connection for each cost most of the gateway's CPU per
 * enrollment. Without a share (out of memory) every exchange connects
 * anew, which still works. */
static void share_setup(struct acme *a)
{
	CURLSH *sh = curl_share_init();
	if (sh == NULL)
		return;
	if (curl_share_setopt(sh, CURLSHOPT_LOCKFUNC, share_lock) != CURLSHE_OK ||
	    curl_share_setopt(sh, CURLSHOPT_UNLOCKFUNC, share_unlock) != CURLSHE_OK ||
	    curl_share_setopt(sh, CURLSHOPT_USERDATA, a) != CURLSHE_OK ||
	    curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT) != CURLSHE_OK ||
	    curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK ||
	    curl_share_setopt(sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS) != CURLSHE_OK) {
		curl_share_cleanup(sh);
		alog(a, FG_LEVEL_WARN, NULL, "backend %s: libcurl cannot share connections; each exchange connects anew",
		     a->name);
		return;
	}
	a->share = sh;
}

static void acme_close(void *state)
{
	struct acme *a = state;
	if (a == NULL)
		return;
	if (a->share != NULL)
		curl_share_cleanup(a->share);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&a->share_mu[i]);
	EVP_PKEY_free(a->key);
	OPENSSL_cleanse(a->eab_key, sizeof a->eab_key);
	fg_cert_list_clear(&a->roots);
	pthread_mutex_destroy(&a->mu);
	free(a);
}

/* challenge, dns_hook and hook_timeout. 0 or -1 with err. */
static int challenge_settings(struct acme *a, const struct fg_kv *kv, size_t n, const char *sd, char *err,
			      size_t errlen)
{
	const char *v = fg_kv_get(kv, n, "challenge");
	a->challenge = CH_HTTP_GATEWAY;
	if (v != NULL) {
		int m = 0;
		while (m < CH_MAX && strcmp(v, chal_names[m]) != 0)
			m++;
		if (m == CH_MAX) {
			fgp_seterr(err, errlen, "backends.%s.challenge: \"%s\" is not a challenge mode; use \"http-01-gateway\", \"http-01-agent\" or \"dns-01\"",
			       a->name, v);
			return -1;
		}
		a->challenge = m;
	}
	if ((v = fg_kv_get(kv, n, "dns_hook")) != NULL) {
		int w = snprintf(a->dns_hook, sizeof a->dns_hook, "%s%s%s", v[0] == '/' || !sd ? "" : sd,
				 v[0] == '/' || !sd ? "" : "/", v);
		if (v[0] == 0 || w < 0 || (size_t)w >= sizeof a->dns_hook || access(a->dns_hook, X_OK) != 0) {
			fgp_seterr(err, errlen, "backends.%s.dns_hook: %s is not an executable file (%s); give the path of the command that publishes _acme-challenge TXT records",
			       a->name, a->dns_hook, v[0] ? strerror(errno) : "empty");
			return -1;
		}
	}
	if (a->challenge == CH_DNS && a->dns_hook[0] == 0) {
		fgp_seterr(err, errlen, "backends.%s: challenge = \"dns-01\" needs dns_hook = \"/path/to/command\" (see docs/acme.md)",
		       a->name);
		return -1;
	}
	if (fgp_num_setting(kv, n, "hook_timeout", 60, 1, 3600, &a->hook_timeout) != 0) {
		fgp_seterr(err, errlen, "backends.%s.hook_timeout: seconds, 1 to 3600", a->name);
		return -1;
	}
	return 0;
}

/* eab_kid and eab_hmac_key (RFC 8555 7.3.4): both or neither; the key is
 * base64url as CAs hand it out. 0, or -1 with err. */
static int eab_setting(struct acme *a, const struct fg_kv *kv, size_t n, char *err, size_t errlen)
{
	const char *kid = fg_kv_get(kv, n, "eab_kid"), *key = fg_kv_get(kv, n, "eab_hmac_key");
	if (kid == NULL && key == NULL)
		return 0;
	if (kid == NULL || key == NULL || kid[0] == 0) {
		fgp_seterr(err, errlen, "backends.%s: set both eab_kid and eab_hmac_key (the external account binding the CA gave you), or neither",
		       a->name);
		return -1;
	}
	if (strlen(kid) >= sizeof a->eab_kid) {
		fgp_seterr(err, errlen, "backends.%s.eab_kid: longer than %zu characters", a->name, sizeof a->eab_kid - 1);
		return -1;
	}
	long l = b64url_decode(key, a->eab_key, sizeof a->eab_key);
	if (l < 16) {
		fgp_seterr(err, errlen, "backends.%s.eab_hmac_key: not a base64url HMAC key of 16 to %zu bytes; copy it exactly as the CA gave it",
		       a->name, sizeof a->eab_key);
		OPENSSL_cleanse(a->eab_key, sizeof a->eab_key);
		return -1;
	}
	a->eab_key_len = (size_t)l;
	snprintf(a->eab_kid, sizeof a->eab_kid, "%s", kid);
	return 0;
}

static int acme_open(const struct fg_host *host, const struct fg_kv *kv, size_t n, void **state,
		     char *err, size_t errlen)
{
	struct acme *a = calloc(1, sizeof *a);
	const char *v, *sd = fg_kv_get(kv, n, "state_dir");
	long l;

	*state = NULL;
	if (a == NULL) {
		fgp_seterr(err, errlen, "out of memory");
		return -1;
	}
	pthread_mutex_init(&a->mu, NULL);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&a->share_mu[i], NULL);
	a->host = host;
	snprintf(a->name, sizeof a->name, "%s", (v = fg_kv_get(kv, n, "name")) ? v : "acme");
	static const char *known[] = { "name", "state_dir", "create", "directory", "tls_ca_file", "root_url",
		"contact", "timeout", "poll_interval", "inline_wait", "cache_ttl", "eab_kid", "eab_hmac_key",
		"challenge", "dns_hook", "hook_timeout", /* challenges */
		NULL };
	for (size_t i = 0; i < n; i++) {
		size_t k = 0;
		while (known[k] && strcmp(known[k], kv[i].key) != 0)
			k++;
		if (known[k] == NULL) {
			fgp_seterr(err, errlen, "backends.%s: unknown setting '%s' for the acme plugin (known: directory, tls_ca_file, root_url, contact, eab_kid, eab_hmac_key, timeout, poll_interval, inline_wait, cache_ttl, challenge, dns_hook, hook_timeout)",
			       a->name, kv[i].key);
			goto fail;
		}
	}
	v = fg_kv_get(kv, n, "directory");
	if (v == NULL || (strncmp(v, "https://", 8) != 0 && strncmp(v, "http://", 7) != 0) ||
	    strlen(v) >= sizeof a->dir_url) {
		fgp_seterr(err, errlen, "backends.%s: set directory = \"https://host[:port]/path\" of the ACME directory (for pebble https://localhost:14000/dir)",
		       a->name);
		goto fail;
	}
	snprintf(a->dir_url, sizeof a->dir_url, "%s", v);
	if ((v = fg_kv_get(kv, n, "tls_ca_file")) != NULL)
		snprintf(a->tls_ca_file, sizeof a->tls_ca_file, "%s%s%s", v[0] == '/' || !sd ? "" : sd,
			 v[0] == '/' || !sd ? "" : "/", v);
	snprintf(a->root_url, sizeof a->root_url, "%s", (v = fg_kv_get(kv, n, "root_url")) ? v : "");
	if ((v = fg_kv_get(kv, n, "contact")) != NULL) {
		if (strncmp(v, "mailto:", 7) != 0 || strlen(v) >= sizeof a->contact) {
			fgp_seterr(err, errlen, "backends.%s.contact: a mailto: URL, for example \"mailto:pki@example.com\"", a->name);
			goto fail;
		}
		snprintf(a->contact, sizeof a->contact, "%s", v);
	}
	if (eab_setting(a, kv, n, err, errlen) != 0)
		goto fail;
	if (fgp_num_setting(kv, n, "timeout", 30, 1, 600, &a->timeout) != 0) {
		fgp_seterr(err, errlen, "backends.%s.timeout: seconds, 1 to 600", a->name);
		goto fail;
	}
	if (fgp_num_setting(kv, n, "poll_interval", 5, 1, 86400, &l) != 0) {
		fgp_seterr(err, errlen, "backends.%s.poll_interval: seconds, 1 to 86400", a->name);
		goto fail;
	}
	a->poll_interval = (uint32_t)l;
	if (fgp_num_setting(kv, n, "inline_wait", 10, 0, 120, &a->inline_wait) != 0) {
		fgp_seterr(err, errlen, "backends.%s.inline_wait: seconds, 0 to 120", a->name);
		goto fail;
	}
	if (fgp_num_setting(kv, n, "cache_ttl", 3600, 0, 7 * 86400, &l) != 0) {
		fgp_seterr(err, errlen, "backends.%s.cache_ttl: seconds, 0 to 604800", a->name);
		goto fail;
	}
	a->cache_ttl = l;
	if (challenge_settings(a, kv, n, sd, err, errlen) != 0)
		goto fail;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
		fgp_seterr(err, errlen, "backends.%s: libcurl would not initialise", a->name);
		goto fail;
	}
	share_setup(a);
	*state = a;
	return 0;
fail:
	acme_close(a);
	return -1;
}

static const struct fg_backend_ops acme_ops = {
	.abi_version = FG_PLUGIN_ABI_VERSION,
	.struct_size = sizeof(struct fg_backend_ops),
	.name = "acme",
	.description = "ACME (RFC 8555) client for an upstream CA",
	.open = acme_open,
	.issue = run_job,
	.poll = run_job,
	.revoke = acme_revoke,
	.cacerts = acme_cacerts,
	.close = acme_close,
	.csr_needs = acme_csr_needs,
	.admin = acme_admin,
};

__attribute__((visibility("default"))) const struct fg_backend_ops *fg_backend_v1(void);
__attribute__((visibility("default"))) const struct fg_backend_ops *fg_backend_v1(void)
{
	return &acme_ops;
}
