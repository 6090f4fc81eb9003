/*
 * curve.c: CURVE key pairs on disk (see fg_curve.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include <openssl/crypto.h>

#include "fg_curve.h"
#include "fg_util.h"

int fg_curve_key_valid(const char *s)
{
	uint8_t bin[32];
	if (s == NULL || strlen(s) != FG_Z85_KEY_LEN)
		return 0;
	return zmq_z85_decode(bin, s) != NULL;
}

/* Value of "name = VALUE" in text, copied into out[41]; 0 or -1. */
static int find_key(const char *text, const char *name, char out[41])
{
	size_t nl = strlen(name);
	for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
		if (strncmp(p, name, nl) != 0)
			continue;
		const char *q = p + nl;
		while (*q == ' ' || *q == '\t')
			q++;
		if (*q != '=')
			continue;
		q++;
		while (*q == ' ' || *q == '\t')
			q++;
		size_t len = strcspn(q, " \t\r\n");
		if (len != FG_Z85_KEY_LEN)
			return -1;
		memcpy(out, q, len);
		out[len] = '\0';
		return 0;
	}
	return -1;
}

int fg_curve_load(const char *path, int create, char pub[41], char sec[41],
		  char *err, size_t errlen)
{
	char *text = NULL, derived[41];
	size_t len;
	struct stat sb;
	int rc = -1;

	if (stat(path, &sb) != 0) {
		if (errno != ENOENT || !create) {
			fg_seterr(err, errlen, "cannot read CURVE key %s: %s", path, strerror(errno));
			return -1;
		}
		char buf[128];
		if (zmq_curve_keypair(pub, sec) != 0) {
			fg_seterr(err, errlen, "cannot make a CURVE key pair: %s", zmq_strerror(zmq_errno()));
			return -1;
		}
		int n = snprintf(buf, sizeof buf, "public = %s\nsecret = %s\n", pub, sec);
		rc = fg_write_file_atomic(path, buf, (size_t)n, 0600, (uid_t)-1, (gid_t)-1, err, errlen);
		OPENSSL_cleanse(buf, sizeof buf);
		return rc;
	}
	if (fg_read_file(path, 4096, &text, &len, err, errlen) != 0)
		return -1;
	if (find_key(text, "public", pub) != 0 || find_key(text, "secret", sec) != 0 ||
	    !fg_curve_key_valid(pub) || !fg_curve_key_valid(sec)) {
		fg_seterr(err, errlen, "%s is not a CURVE key file (expected 'public = ' and 'secret = ' lines with 40-character Z85 keys)",
			  path);
		goto out;
	}
	if (zmq_curve_public(derived, sec) != 0 || strcmp(derived, pub) != 0) {
		fg_seterr(err, errlen, "%s: the public key does not belong to the secret key; the file was altered", path);
		goto out;
	}
	rc = 0;
out:
	if (rc != 0)
		OPENSSL_cleanse(sec, 41);
	if (text) {
		OPENSSL_cleanse(text, len);
		free(text);
	}
	return rc;
}

int fg_curve_write_public(const char *path, const char pub[41], char *err, size_t errlen)
{
	char buf[64];
	int n = snprintf(buf, sizeof buf, "public = %s\n", pub);
	return fg_write_file_atomic(path, buf, (size_t)n, 0644, (uid_t)-1, (gid_t)-1, err, errlen);
}
