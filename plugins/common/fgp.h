/*
 * Helpers shared by the backend plugins: messages, settings and pins.
 * fgp.c is compiled into each plugin (plugins/meson.build), so nothing here
 * is part of the plugin ABI and every plugin keeps these symbols hidden.
 */
#ifndef FLEETGATE_FGP_H
#define FLEETGATE_FGP_H

#include <stddef.h>
#include "fleetgate/plugin.h"

/* One log line through the host, formatted. */
void fgp_log(const struct fg_host *host, enum fg_level lvl, const char *request_id, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Format into err (nothing when err is NULL or errlen 0). */
void fgp_seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Like fgp_seterr, with the oldest queued OpenSSL error appended after
 * ": "; empties OpenSSL's error queue. */
void fgp_ssl_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* A whole decimal setting in [min, max]; def when absent. 0, or -1 when
 * present but not such a number. */
int fgp_num_setting(const struct fg_kv *kv, size_t n, const char *key, long def, long min, long max,
		    long *out);

/* A SHA-256 fingerprint as operators write it ("sha256:AB:CD:...",
 * "AB CD ...", "abcd...") into 32 bytes. 0, or -1 when it is not 32 bytes
 * of hex. */
int fgp_parse_pin(const char *text, unsigned char out[32]);

#endif
