/*
 * fg_curve: CURVE key pairs on disk.
 *
 * File format (mode 0600):
 *   public = <40-char Z85>
 *   secret = <40-char Z85>
 * A ".pub" file holds only the "public = " line.
 */
#ifndef FG_CURVE_H
#define FG_CURVE_H

#include <stddef.h>

#define FG_Z85_KEY_LEN 40

/* Load the pair at path; when it does not exist and create is set, make a new
 * pair with zmq_curve_keypair and write it durably (0600). pub/sec get 41 bytes. */
int fg_curve_load(const char *path, int create, char pub[41], char sec[41],
		  char *err, size_t errlen);
/* Write "public = ..." to path (0644). */
int fg_curve_write_public(const char *path, const char pub[41], char *err, size_t errlen);
/* 1 when s is exactly 40 Z85 characters that decode to 32 bytes, else 0. */
int fg_curve_key_valid(const char *s);

#endif
