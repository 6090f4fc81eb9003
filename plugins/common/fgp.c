/* Helpers shared by the backend plugins; see fgp.h. */
#include "fgp.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <openssl/err.h>

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
