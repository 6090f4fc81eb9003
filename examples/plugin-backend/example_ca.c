/*
 * example_ca.c: an out-of-tree fleetgate backend plugin, built against the
 * installed SDK only (fleetgate/plugin.h, pkg-config fleetgate-plugin):
 *
 *   cc -shared -fPIC -o fleetgate-example.so example_ca.c \
 *      $(pkg-config --cflags fleetgate-plugin) $(pkg-config --libs libcrypto)
 *   install -m 0755 fleetgate-example.so "$(pkg-config --variable=plugindir fleetgate-plugin)"
 *
 * A tiny CA for a lab: on first open it makes a P-256 key and a self-signed
 * certificate in the state directory (example-ca.key, example-ca.crt), and
 * it signs each request with exactly the names and validity the host
 * decided. It shows the parts every backend has: the ops table with ABI
 * version and size first, settings as key/value pairs, host services (log,
 * random, serial_reserve), errors returned with a message, nothing exiting.
 * Not for production: no write-ahead record of the to-be-signed data, no
 * revocation. docs/plugins.md explains the rules.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <fleetgate/plugin.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

struct example {
	const struct fg_host *host;
	EVP_PKEY *key;
	X509 *cert;
};

/* Load the CA from dir, or make it there when it is absent. 0 or -1. */
static int ca_load_or_make(struct example *ex, const char *dir, char *err, size_t errlen)
{
	char kpath[4096], cpath[4096];
	FILE *f;

	snprintf(kpath, sizeof kpath, "%s/example-ca.key", dir);
	snprintf(cpath, sizeof cpath, "%s/example-ca.crt", dir);
	if ((f = fopen(kpath, "r")) != NULL) {
		ex->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		fclose(f);
		if ((f = fopen(cpath, "r")) != NULL) {
			ex->cert = PEM_read_X509(f, NULL, NULL, NULL);
			fclose(f);
		}
		if (ex->key == NULL || ex->cert == NULL) {
			snprintf(err, errlen, "cannot read the example CA in %s; remove example-ca.key and example-ca.crt to make a new one", dir);
			return -1;
		}
		return 0;
	}
	ex->key = EVP_EC_gen("P-256");
	ex->cert = X509_new();
	if (ex->key == NULL || ex->cert == NULL)
		goto fail;
	X509_NAME *n = X509_get_subject_name(ex->cert);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"fleetgate example CA", -1, -1, 0);
	X509_set_issuer_name(ex->cert, n);
	X509_set_version(ex->cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(ex->cert), 1);
	X509_gmtime_adj(X509_getm_notBefore(ex->cert), -300);
	X509_gmtime_adj(X509_getm_notAfter(ex->cert), 365L * 86400);
	X509_set_pubkey(ex->cert, ex->key);
	X509V3_CTX ctx;
	X509V3_set_ctx(&ctx, ex->cert, ex->cert, NULL, NULL, 0);
	X509_EXTENSION *bc = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:TRUE");
	X509_EXTENSION *ku = X509V3_EXT_conf_nid(NULL, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
	X509_EXTENSION *ski = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_key_identifier, "hash");
	int ok = bc && ku && ski && X509_add_ext(ex->cert, bc, -1) && X509_add_ext(ex->cert, ku, -1) &&
		 X509_add_ext(ex->cert, ski, -1) && X509_sign(ex->cert, ex->key, EVP_sha256()) > 0;
	X509_EXTENSION_free(bc);
	X509_EXTENSION_free(ku);
	X509_EXTENSION_free(ski);
	if (!ok)
		goto fail;
	if ((f = fopen(kpath, "wx")) == NULL || !PEM_write_PrivateKey(f, ex->key, NULL, NULL, 0, NULL, NULL) ||
	    fclose(f) != 0) {
		snprintf(err, errlen, "cannot write %s; check that the state directory is writable", kpath);
		return -1;
	}
	if ((f = fopen(cpath, "w")) == NULL || !PEM_write_X509(f, ex->cert) || fclose(f) != 0) {
		snprintf(err, errlen, "cannot write %s; check that the state directory is writable", cpath);
		return -1;
	}
	return 0;
fail:
	snprintf(err, errlen, "cannot make the example CA (OpenSSL failed)");
	return -1;
}

static void ex_close(void *state)
{
	struct example *ex = state;

	if (ex == NULL)
		return;
	EVP_PKEY_free(ex->key);
	X509_free(ex->cert);
	free(ex);
}

static int ex_open(const struct fg_host *host, const struct fg_kv *settings, size_t n, void **state,
		   char *err, size_t errlen)
{
	const char *dir = fg_kv_get(settings, n, "state_dir");
	struct example *ex;

	if (host->abi_version != FG_PLUGIN_ABI_VERSION) {
		snprintf(err, errlen, "host ABI %u, plugin ABI %u: rebuild the plugin against this fleetgate",
			 (unsigned)host->abi_version, (unsigned)FG_PLUGIN_ABI_VERSION);
		return -1;
	}
	if ((ex = calloc(1, sizeof *ex)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	ex->host = host;
	if (ca_load_or_make(ex, dir ? dir : ".", err, errlen) != 0) {
		ex_close(ex);
		return -1;
	}
	host->log(host->ctx, FG_LEVEL_INFO, NULL, "example CA ready");
	*state = ex;
	return 0;
}

/* DER of x into malloc'd *der. 0 or -1. */
static int to_der(X509 *x, unsigned char **der, size_t *len)
{
	int n = i2d_X509(x, NULL);
	unsigned char *p;

	if (n <= 0 || (*der = p = malloc((size_t)n)) == NULL)
		return -1;
	i2d_X509(x, &p);
	*len = (size_t)n;
	return 0;
}

static int ex_issue(void *state, const struct fg_issue_request *req, struct fg_issue_result *res)
{
	struct example *ex = state;
	const unsigned char *p = req->csr_der;
	X509_REQ *csr = d2i_X509_REQ(NULL, &p, (long)req->csr_len);
	X509 *x = X509_new();
	EVP_PKEY *pub = csr ? X509_REQ_get0_pubkey(csr) : NULL;
	unsigned char sn[16];
	char hex[33], san[4096] = "";
	BIGNUM *bn = NULL;
	int rc = -1;

	res->status = FG_ISSUE_ERROR;
	if (csr == NULL || x == NULL || pub == NULL) {
		snprintf(res->message, sizeof res->message, "example CA: cannot read the CSR");
		goto out;
	}
	for (;;) {     /* a serial the host has not seen: 128 random bits */
		if (ex->host->random(ex->host->ctx, sn, sizeof sn) != 0)
			goto out;
		sn[0] &= 0x7f;
		for (size_t i = 0; i < sizeof sn; i++)
			snprintf(hex + 2 * i, 3, "%02X", sn[i]);
		int r = ex->host->serial_reserve(ex->host->ctx, hex);
		if (r == 0)
			break;
		if (r < 0) {
			snprintf(res->message, sizeof res->message, "example CA: cannot reserve a serial");
			goto out;
		}
	}
	bn = BN_bin2bn(sn, sizeof sn, NULL);
	X509_set_version(x, 2);
	BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
	X509_set_issuer_name(x, X509_get_subject_name(ex->cert));
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_UTF8,
				   (const unsigned char *)req->subject_cn, -1, -1, 0);
	ASN1_TIME_set(X509_getm_notBefore(x), (time_t)req->not_before);
	ASN1_TIME_set(X509_getm_notAfter(x), (time_t)req->not_after);
	X509_set_pubkey(x, pub);
	for (size_t i = 0; i < req->n_dns; i++) {
		size_t l = strlen(san);
		snprintf(san + l, sizeof san - l, "%sDNS:%s", l ? "," : "", req->dns_names[i]);
	}
	X509V3_CTX ctx;
	X509V3_set_ctx(&ctx, ex->cert, x, NULL, NULL, 0);
	X509_EXTENSION *bc = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:FALSE");
	X509_EXTENSION *alt = san[0] ? X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, san) : NULL;
	int ok = bc && X509_add_ext(x, bc, -1) && (!san[0] || (alt && X509_add_ext(x, alt, -1))) &&
		 X509_sign(x, ex->key, EVP_sha256()) > 0;
	X509_EXTENSION_free(bc);
	X509_EXTENSION_free(alt);
	if (!ok || to_der(x, &res->cert_der, &res->cert_len) != 0) {
		snprintf(res->message, sizeof res->message, "example CA: signing failed");
		goto out;
	}
	res->chain_der = calloc(1, sizeof *res->chain_der);
	res->chain_len = calloc(1, sizeof *res->chain_len);
	if (res->chain_der == NULL || res->chain_len == NULL ||
	    to_der(ex->cert, &res->chain_der[0], &res->chain_len[0]) != 0)
		goto out;
	res->n_chain = 1;
	res->status = FG_ISSUE_OK;
	ex->host->log(ex->host->ctx, FG_LEVEL_INFO, req->request_id, "example CA issued a certificate");
	rc = 0;
out:
	BN_free(bn);
	X509_free(x);
	X509_REQ_free(csr);
	return rc;
}

static int ex_revoke(void *state, const unsigned char *der, size_t len, enum fg_revoke_reason reason,
		     char *err, size_t errlen)
{
	snprintf(err, errlen, "the example CA keeps no revocation list; use the local backend for that");
	return -1;
}

static int ex_cacerts(void *state, struct fg_cert_list *out, char *err, size_t errlen)
{
	struct example *ex = state;

	out->der = calloc(1, sizeof *out->der);
	out->len = calloc(1, sizeof *out->len);
	if (out->der == NULL || out->len == NULL || to_der(ex->cert, &out->der[0], &out->len[0]) != 0) {
		fg_cert_list_clear(out);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	out->n = 1;
	return 0;
}

static const struct fg_backend_ops ops = {
	.abi_version = FG_PLUGIN_ABI_VERSION,
	.struct_size = sizeof(struct fg_backend_ops),
	.name = "example",
	.description = "example CA built out of tree against the fleetgate plugin SDK",
	.open = ex_open,
	.issue = ex_issue,
	.poll = NULL,
	.revoke = ex_revoke,
	.cacerts = ex_cacerts,
	.close = ex_close,
};

__attribute__((visibility("default"))) const struct fg_backend_ops *fg_backend_v1(void);
const struct fg_backend_ops *fg_backend_v1(void)
{
	return &ops;
}
