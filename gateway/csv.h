/*
 * csv: a reader for the operator's CSV files (RFC 4180).
 *
 * Fields are separated by commas, records by LF or CRLF. A field may be
 * enclosed in double quotes, and then holds commas, line breaks and quotes
 * written twice (""). A UTF-8 byte order mark at the start is skipped, and
 * so are empty lines. Anything else that is not well-formed (a quote inside
 * an unquoted field, text after a closing quote, a quote never closed, a
 * lone carriage return, a NUL byte) is an error naming the line, never
 * guessed at: an import must not read a row differently from what the
 * operator meant.
 *
 * The reader borrows the input buffer for its whole life and never copies
 * it; the fields it hands out live in its own buffer until the next call.
 */
#ifndef FG_CSV_H
#define FG_CSV_H

#include <stddef.h>

struct csv;

/* A reader over data[0..len) (borrowed); NULL when out of memory. */
struct csv *csv_new(const char *data, size_t len);
void csv_free(struct csv *c);

/* The next record: 1 with *fields and *nfields (borrowed until the next
 * call) and *line the 1-based line it starts on; 0 at the end of the input;
 * -1 with *line the line of the fault and err saying what is wrong and what
 * to do. After an error the reader is at the end (the rest of the file
 * cannot be trusted). */
int csv_next(struct csv *c, char ***fields, size_t *nfields, long *line, char *err, size_t errlen);

/* Bytes consumed so far (for a progress display). */
size_t csv_offset(const struct csv *c);

#endif
