/*
 * crl.c: publishing backends' CRLs (see crl.h).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "crl.h"
#include "fg_log.h"
#include "fg_util.h"

#define CRL_MAX_FILE (64 * 1024 * 1024)

int crl_path(const struct gw_config *cfg, const char *backend, char *out, size_t outlen)
{
	int n = snprintf(out, outlen, "%s/crl/%s.crl", cfg->state_dir, backend);
	return n > 0 && (size_t)n < outlen ? 0 : -1;
}

static int64_t asn1_time_unix(const ASN1_TIME *t)
{
	struct tm tm;
	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	return (int64_t)timegm(&tm);
}

/* Fill info from a DER CRL. 0, or -1 with err. */
static int info_from_der(const unsigned char *der, size_t len, struct crl_info *info,
			 const char *what, char *err, size_t errlen)
{
	const unsigned char *p = der;
	X509_CRL *crl = len <= LONG_MAX ? d2i_X509_CRL(NULL, &p, (long)len) : NULL;
	ASN1_INTEGER *num = NULL;
	BIGNUM *bn = NULL;
	char *dec = NULL;

	memset(info, 0, sizeof *info);
	if (crl == NULL) {
		fg_ssl_err(err, errlen, "");
		fg_seterr(err, errlen, "%s is not a DER CRL; remove it and it is made again", what);
		return -1;
	}
	info->this_update = asn1_time_unix(X509_CRL_get0_lastUpdate(crl));
	info->next_update = asn1_time_unix(X509_CRL_get0_nextUpdate(crl));
	STACK_OF(X509_REVOKED) *rv = X509_CRL_get_REVOKED(crl);
	info->entries = rv ? sk_X509_REVOKED_num(rv) : 0;
	num = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
	if (num != NULL && (bn = ASN1_INTEGER_to_BN(num, NULL)) != NULL && (dec = BN_bn2dec(bn)) != NULL)
		fg_strlcpy(info->number, dec, sizeof info->number);
	OPENSSL_free(dec);
	BN_free(bn);
	ASN1_INTEGER_free(num);
	X509_CRL_free(crl);
	return 0;
}

int crl_read_info(const struct gw_config *cfg, const char *backend, struct crl_info *out,
		  char *err, size_t errlen)
{
	char path[PATH_MAX], lerr[512];
	char *data = NULL;
	size_t len = 0;
	FILE *f;
	int rc;

	if (crl_path(cfg, backend, path, sizeof path) != 0) {
		fg_seterr(err, errlen, "CRL path of backend %s is too long", backend);
		return -1;
	}
	/* absent is not an error: nothing published yet */
	if ((f = fopen(path, "rb")) == NULL && errno == ENOENT)
		return 0;
	if (f != NULL)
		fclose(f);
	if (fg_read_file(path, CRL_MAX_FILE, &data, &len, lerr, sizeof lerr) != 0) {
		fg_seterr(err, errlen, "%s", lerr);
		return -1;
	}
	rc = info_from_der((unsigned char *)data, len, out, path, err, errlen) == 0 ? 1 : -1;
	free(data);
	return rc;
}

#define CRL_CLOCK_SKEW 300 /* seconds thisUpdate may be ahead of the clock before a new CRL is made */

int crl_due(const struct crl_info *info, int64_t now)
{
	if (info->next_update <= info->this_update)
		return 1;
	/* the clock went back (a CRL made while it was ahead): a relying party
	 * refuses a CRL from the future, so a new one is made now; its number
	 * still follows the last (the number comes from the store) */
	if (now + CRL_CLOCK_SKEW < info->this_update)
		return 1;
	return now >= info->this_update + (info->next_update - info->this_update) / 2;
}

struct revoked_list {
	struct fg_revoked *v;
	char (*serials)[48];
	size_t n, cap;
	int oom;
};

static int collect_revoked(void *arg, const char *serial_hex, int64_t revoked_at)
{
	struct revoked_list *l = arg;

	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		struct fg_revoked *v = realloc(l->v, cap * sizeof *v);
		if (v != NULL)
			l->v = v;
		char (*s)[48] = realloc(l->serials, cap * sizeof *s);
		if (s != NULL)
			l->serials = s;
		if (v == NULL || s == NULL) {
			l->oom = 1;
			return 1;
		}
		l->cap = cap;
	}
	fg_strlcpy(l->serials[l->n], serial_hex, sizeof l->serials[l->n]);
	l->v[l->n].revoked_at = revoked_at;
	l->n++;
	return 0;
}

/* See crl.h. The list is read from the store in one statement, handed to
 * the plugin, and the signed CRL replaces the published file atomically:
 * a reader (the HTTP thread, a relying party) never sees half of it. */
int crl_publish(const struct gw_config *cfg, struct backend *b, struct store *st, int64_t now,
		struct crl_info *out, char *err, size_t errlen)
{
	struct revoked_list l;
	char path[PATH_MAX], dir[PATH_MAX], perr[512] = "";
	unsigned char *der = NULL;
	size_t len = 0;
	struct crl_info info;
	int rc = -1;

	if (b->ops->make_crl == NULL)
		return 1;
	memset(&l, 0, sizeof l);
	if (crl_path(cfg, b->name, path, sizeof path) != 0 ||
	    fg_path_join(cfg->state_dir, "crl", dir, sizeof dir) != 0) {
		fg_seterr(err, errlen, "CRL path of backend %s is too long", b->name);
		return -1;
	}
	if (store_cert_list_revoked(st, b->name, collect_revoked, &l, err, errlen) != 0)
		goto out;
	if (l.oom) {
		fg_seterr(err, errlen, "out of memory listing the revoked certificates of backend %s", b->name);
		goto out;
	}
	for (size_t i = 0; i < l.n; i++)
		l.v[i].serial_hex = l.serials[i];
	if (b->ops->make_crl(b->state, l.v, l.n, now, &der, &len, perr, sizeof perr) != 0) {
		fg_seterr(err, errlen, "backend %s could not make its CRL: %s", b->name,
			  perr[0] ? perr : "no reason given");
		goto out;
	}
	if (info_from_der(der, len, &info, "the CRL the plugin made", err, errlen) != 0)
		goto out;
	if (fg_mkdirs(dir, 0755, err, errlen) != 0 ||
	    fg_write_file_atomic(path, der, len, 0644, (uid_t)-1, (gid_t)-1, err, errlen) != 0)
		goto out;
	if (out != NULL)
		*out = info;
	fg_info("crl", NULL, "published CRL %s of backend %s: %ld revoked, next update %lld",
		info.number, b->name, info.entries, (long long)info.next_update);
	rc = 0;
out:
	free(der);
	free(l.v);
	free(l.serials);
	return rc;
}

int crl_refresh(const struct gw_config *cfg, struct backends *bs, struct store *st, int64_t now,
		int force, char *err, size_t errlen)
{
	char lerr[1024];
	int published = 0, failed = 0;

	for (size_t i = 0; i < cfg->nbackends; i++) {
		struct backend *b = backends_find(bs, cfg->backends[i].name);
		struct crl_info info;
		long revoked = 0;
		int r, due = force;

		if (b == NULL || b->ops->make_crl == NULL)
			continue;
		if (!due) {
			r = crl_read_info(cfg, b->name, &info, lerr, sizeof lerr);
			if (r < 0)
				fg_warn("crl", NULL, "%s", lerr);
			due = r != 1 || crl_due(&info, now);
			if (!due && store_cert_count_revoked(st, b->name, &revoked, lerr, sizeof lerr) == 0 &&
			    revoked != info.entries)
				due = 1;
		}
		if (!due)
			continue;
		if (crl_publish(cfg, b, st, now, NULL, lerr, sizeof lerr) == 0) {
			published++;
		} else {
			if (!failed)
				fg_seterr(err, errlen, "%s", lerr);
			failed = 1;
			fg_err("crl", NULL, "%s", lerr);
		}
	}
	return failed ? -1 : published;
}
