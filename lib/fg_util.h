/*
 * fg_util: small helpers shared by every binary: randomness, hex, hashing,
 * durable file writes, durations and timestamps, OpenSSL error draining.
 *
 * Convention (house style): int functions return 0 on success and -1 on
 * failure, with a human-readable reason in err (at most errlen bytes,
 * always NUL-terminated when errlen > 0). err may be NULL.
 */
#ifndef FG_UTIL_H
#define FG_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FG_VERSION "0.1.0"

/* Format into err (snprintf semantics); tolerates err == NULL. */
void fg_seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Append the drained OpenSSL error queue (": reason; reason") to err,
 * after an existing prefix. Always empties the queue, even if err is NULL. */
void fg_ssl_err(char *err, size_t errlen, const char *prefix);

/* Cryptographically secure random bytes (RAND_bytes). 0 or -1. */
int fg_random(void *buf, size_t len);

/* Lower-case hex of len bytes into out (2*len+1 bytes). Returns out. */
char *fg_hex(const void *in, size_t len, char *out);
/* Decode hex (either case) into out (at most outlen bytes). Returns bytes
 * written, or -1 on odd length, bad digit or overflow. */
ssize_t fg_unhex(const char *in, void *out, size_t outlen);

/* SHA-256 of data as 64 lower-case hex digits plus NUL in out[65]. */
void fg_sha256_hex(const void *data, size_t len, char out[65]);

/* Enrollment tokens: "fgt_" + 32 hex digits (128 random bits).
 * FG_TOKEN_LEN is the string length without NUL. */
#define FG_TOKEN_LEN 36
int fg_token_new(char out[FG_TOKEN_LEN + 1]);
/* 1 when s has the token shape, else 0 (cheap check before any lookup). */
int fg_token_wellformed(const char *s);
/* The stored form of a token: hex SHA-256 of the token string. */
void fg_token_hash(const char *token, char out[65]);

/* Random identifier: prefix + 2*nbytes hex digits, e.g. fg_id_new("dev_", 8, buf, sizeof buf). */
int fg_id_new(const char *prefix, size_t nbytes, char *out, size_t outlen);

/* Read a whole file (at most max bytes, else error) into a malloc'd,
 * NUL-terminated buffer; *len excludes the NUL. Caller frees. */
int fg_read_file(const char *path, size_t max, char **out, size_t *len, char *err, size_t errlen);

/* A process-wide opener that fg_read_file asks first: it returns an open
 * descriptor for path, -1 with errno set when it knows the path but cannot
 * open it, or -2 when path is not one of its own (fg_read_file then opens
 * it itself). The confined gateway reads its policy this way, through a
 * process outside its sandbox. NULL (the default) removes it. */
void fg_set_read_opener(int (*opener)(const char *path));

/* Durable, atomic replace of path: write a temp file in the same directory
 * with the given mode (and owner when uid/gid != (uid_t)-1 / (gid_t)-1),
 * fsync it, rename over path, fsync the directory. On failure the old file
 * is untouched and the temp file removed. */
int fg_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode,
			 uid_t uid, gid_t gid, char *err, size_t errlen);

/* rename(from, to), then fsync of to's directory: the new name is durable
 * when it returns 0; -1 with err. Needs no new data blocks, so it works
 * on a full disk (the agent's rollback from <file>.prev). */
int fg_rename_durable(const char *from, const char *to, char *err, size_t errlen);

/* mkdir -p with mode for each created component. */
int fg_mkdirs(const char *path, mode_t mode, char *err, size_t errlen);

/* Join dir and rel into out unless rel is absolute (then copy rel). */
int fg_path_join(const char *dir, const char *rel, char *out, size_t outlen);

/* Seconds since the epoch (CLOCK_REALTIME) and a monotonic clock in ns. */
int64_t fg_now(void);
uint64_t fg_mono_ns(void);

/* "2026-11-28T10:00:00Z" into out (at least 21 bytes). */
char *fg_time_iso(int64_t t, char *out, size_t outlen);

/* Parse a duration: plain seconds or a number with s, m, h, d, w suffix
 * ("90d", "1h", "3600"). Returns -1 on error, else seconds. */
int64_t fg_parse_duration(const char *s);

/* Bounded copy; always NUL-terminates; returns strlen(src). */
size_t fg_strlcpy(char *dst, const char *src, size_t size);

#endif
