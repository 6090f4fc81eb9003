/*
 * util.c: small shared helpers (see fg_util.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "fg_util.h"

void fg_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

void fg_ssl_err(char *err, size_t errlen, const char *prefix)
{
	size_t used = 0;
	unsigned long e;
	char buf[256];

	if (err != NULL && errlen > 0) {
		if (prefix != NULL)
			snprintf(err, errlen, "%s", prefix);
		used = strlen(err);
	}
	int first = 1;
	while ((e = ERR_get_error()) != 0) {
		if (err == NULL || errlen == 0 || used + 4 >= errlen)
			continue;
		const char *reason = ERR_reason_error_string(e);
		if (reason == NULL) {
			ERR_error_string_n(e, buf, sizeof buf);
			reason = buf;
		}
		int n = snprintf(err + used, errlen - used, "%s%s", first ? ": " : "; ", reason);
		if (n > 0)
			used = used + (size_t)n < errlen ? used + (size_t)n : errlen - 1;
		first = 0;
	}
}

int fg_random(void *buf, size_t len)
{
	if (len == 0)
		return 0;
	if (len > INT_MAX)
		return -1;
	return RAND_bytes(buf, (int)len) == 1 ? 0 : -1;
}

char *fg_hex(const void *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	const unsigned char *p = in;
	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * len] = '\0';
	return out;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

ssize_t fg_unhex(const char *in, void *out, size_t outlen)
{
	size_t n = strlen(in);
	unsigned char *o = out;
	if (n % 2 != 0 || n / 2 > outlen)
		return -1;
	for (size_t i = 0; i < n / 2; i++) {
		int hi = hexval(in[2 * i]), lo = hexval(in[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		o[i] = (unsigned char)(hi << 4 | lo);
	}
	return (ssize_t)(n / 2);
}

void fg_sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char md[32];
	unsigned int mdlen = 0;
	if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32) {
		memset(out, '0', 64);
		out[64] = '\0';
		return;
	}
	fg_hex(md, 32, out);
}

int fg_token_new(char out[FG_TOKEN_LEN + 1])
{
	unsigned char r[16];
	if (fg_random(r, sizeof r) != 0)
		return -1;
	memcpy(out, "fgt_", 4);
	fg_hex(r, sizeof r, out + 4);
	OPENSSL_cleanse(r, sizeof r);
	return 0;
}

int fg_token_wellformed(const char *s)
{
	if (s == NULL || strlen(s) != FG_TOKEN_LEN || strncmp(s, "fgt_", 4) != 0)
		return 0;
	for (const char *p = s + 4; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return 0;
	return 1;
}

void fg_token_hash(const char *token, char out[65])
{
	fg_sha256_hex(token, strlen(token), out);
}

int fg_id_new(const char *prefix, size_t nbytes, char *out, size_t outlen)
{
	unsigned char r[32];
	size_t pl = strlen(prefix);
	if (nbytes > sizeof r || pl + 2 * nbytes + 1 > outlen)
		return -1;
	if (fg_random(r, nbytes) != 0)
		return -1;
	memcpy(out, prefix, pl);
	fg_hex(r, nbytes, out + pl);
	return 0;
}

static int (*read_opener)(const char *path);

void fg_set_read_opener(int (*opener)(const char *path))
{
	read_opener = opener;
}

int fg_read_file(const char *path, size_t max, char **out, size_t *len, char *err, size_t errlen)
{
	int fd = read_opener ? read_opener(path) : -2;
	if (fd == -2)
		fd = open(path, O_RDONLY | O_CLOEXEC);
	char *buf = NULL;
	size_t cap = 0, n = 0;
	*out = NULL;
	if (len)
		*len = 0;
	if (fd < 0) {
		fg_seterr(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	for (;;) {
		if (n + 1 >= cap) {
			size_t ncap = cap ? cap * 2 : 4096;
			if (ncap > max + 2)
				ncap = max + 2;
			if (ncap <= n + 1) {
				fg_seterr(err, errlen, "%s is larger than %zu bytes", path, max);
				goto fail;
			}
			char *nb = realloc(buf, ncap);
			if (nb == NULL) {
				fg_seterr(err, errlen, "out of memory reading %s", path);
				goto fail;
			}
			buf = nb;
			cap = ncap;
		}
		ssize_t r = read(fd, buf + n, cap - n - 1);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			fg_seterr(err, errlen, "cannot read %s: %s", path, strerror(errno));
			goto fail;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (n > max) {
			fg_seterr(err, errlen, "%s is larger than %zu bytes", path, max);
			goto fail;
		}
	}
	close(fd);
	if (buf == NULL && (buf = malloc(1)) == NULL) {
		fg_seterr(err, errlen, "out of memory reading %s", path);
		return -1;
	}
	buf[n] = '\0';
	*out = buf;
	if (len)
		*len = n;
	return 0;
fail:
	close(fd);
	free(buf);
	return -1;
}

static int fsync_dir_of(const char *path)
{
	char tmp[PATH_MAX];
	fg_strlcpy(tmp, path, sizeof tmp);
	int dfd = open(dirname(tmp), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -1;
	int rc = fsync(dfd);
	close(dfd);
	return rc;
}

int fg_rename_durable(const char *from, const char *to, char *err, size_t errlen)
{
	if (rename(from, to) != 0) {
		fg_seterr(err, errlen, "cannot rename %s to %s: %s", from, to, strerror(errno));
		return -1;
	}
	if (fsync_dir_of(to) != 0) {
		fg_seterr(err, errlen, "renamed %s to %s, but cannot fsync its directory: %s", from, to,
			  strerror(errno));
		return -1;
	}
	return 0;
}

int fg_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode,
			 uid_t uid, gid_t gid, char *err, size_t errlen)
{
	char tmp[PATH_MAX];
	const unsigned char *p = data;
	int fd = -1;

	for (int attempt = 0; attempt < 8 && fd < 0; attempt++) {
		unsigned char r[6];
		char hex[13];
		if (fg_random(r, sizeof r) != 0) {
			fg_seterr(err, errlen, "cannot draw random bytes for a temp file name");
			return -1;
		}
		if (snprintf(tmp, sizeof tmp, "%s.tmp.%s", path, fg_hex(r, sizeof r, hex)) >= (int)sizeof tmp) {
			fg_seterr(err, errlen, "path too long: %s", path);
			return -1;
		}
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode & 07777);
		if (fd < 0 && errno != EEXIST) {
			fg_seterr(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
			return -1;
		}
	}
	if (fd < 0) {
		fg_seterr(err, errlen, "cannot create a temp file next to %s", path);
		return -1;
	}
	if (fchmod(fd, mode & 07777) != 0) {
		fg_seterr(err, errlen, "cannot set mode %o on %s: %s", (unsigned)mode, tmp, strerror(errno));
		goto fail;
	}
	if ((uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fd, uid, gid) != 0) {
		fg_seterr(err, errlen, "cannot set owner of %s: %s", path, strerror(errno));
		goto fail;
	}
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			fg_seterr(err, errlen, "cannot write %s: %s", tmp, strerror(errno));
			goto fail;
		}
		p += w;
		len -= (size_t)w;
	}
	if (fsync(fd) != 0) {
		fg_seterr(err, errlen, "cannot fsync %s: %s", tmp, strerror(errno));
		goto fail;
	}
	if (close(fd) != 0) {
		fd = -1;
		fg_seterr(err, errlen, "cannot close %s: %s", tmp, strerror(errno));
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) != 0) {
		fg_seterr(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
		goto fail;
	}
	if (fsync_dir_of(path) != 0) {
		fg_seterr(err, errlen, "wrote %s but could not fsync its directory: %s", path,
			  strerror(errno));
		return -1;
	}
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return -1;
}

int fg_mkdirs(const char *path, mode_t mode, char *err, size_t errlen)
{
	char buf[PATH_MAX];
	if (fg_strlcpy(buf, path, sizeof buf) >= sizeof buf) {
		fg_seterr(err, errlen, "path too long: %s", path);
		return -1;
	}
	for (char *p = buf + 1;; p++) {
		if (*p == '/' || *p == '\0') {
			char c = *p;
			*p = '\0';
			if (mkdir(buf, mode) != 0 && errno != EEXIST) {
				fg_seterr(err, errlen, "cannot create directory %s: %s", buf, strerror(errno));
				return -1;
			}
			*p = c;
			if (c == '\0')
				break;
		}
	}
	struct stat sb;
	if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
		fg_seterr(err, errlen, "%s exists and is not a directory", path);
		return -1;
	}
	return 0;
}

int fg_path_join(const char *dir, const char *rel, char *out, size_t outlen)
{
	int n;
	if (rel[0] == '/' || dir == NULL || dir[0] == '\0')
		n = snprintf(out, outlen, "%s", rel);
	else
		n = snprintf(out, outlen, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", rel);
	return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

int64_t fg_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec;
}

uint64_t fg_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

char *fg_time_iso(int64_t t, char *out, size_t outlen)
{
	struct tm tm;
	time_t tt = (time_t)t;
	if (gmtime_r(&tt, &tm) == NULL || strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, outlen, "%lld", (long long)t);
	return out;
}

int64_t fg_parse_duration(const char *s)
{
	char *end;
	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	long long v = strtoll(s, &end, 10);
	if (errno != 0 || v < 0)
		return -1;
	int64_t mul = 1;
	switch (*end) {
	case '\0': break;
	case 's': mul = 1; end++; break;
	case 'm': mul = 60; end++; break;
	case 'h': mul = 3600; end++; break;
	case 'd': mul = 86400; end++; break;
	case 'w': mul = 7 * 86400; end++; break;
	case 'y': mul = 365 * 86400; end++; break;
	default: return -1;
	}
	if (*end != '\0' || v > INT64_MAX / mul)
		return -1;
	return v * mul;
}

size_t fg_strlcpy(char *dst, const char *src, size_t size)
{
	size_t n = strlen(src);
	if (size > 0) {
		size_t c = n < size - 1 ? n : size - 1;
		memcpy(dst, src, c);
		dst[c] = '\0';
	}
	return n;
}
