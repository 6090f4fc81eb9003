/*
 * csv.c: the RFC 4180 reader (see csv.h).
 *
 * One pass over the input, byte by byte: the unescaped fields of the
 * current record are appended NUL-terminated to one growing buffer, and the
 * field pointers are set once the record is complete (the buffer may move
 * while it grows). Both buffers are reused from record to record, so a
 * 100,000-row file costs no allocation per row.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csv.h"
#include "fg_util.h"

struct csv {
	const char *data;
	size_t len, pos;
	long line;                /* line of data[pos] */
	char *buf;                /* the current record's fields, each NUL-terminated */
	size_t blen, bcap;
	size_t *offs;             /* start of each field in buf */
	char **fields;            /* pointers into buf, handed to the caller */
	size_t nf, fcap;
};

struct csv *csv_new(const char *data, size_t len)
{
	struct csv *c = calloc(1, sizeof *c);
	if (c == NULL)
		return NULL;
	c->data = data;
	c->len = len;
	c->line = 1;
	if (len >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0)
		c->pos = 3;   /* UTF-8 byte order mark, as spreadsheets write it */
	return c;
}

void csv_free(struct csv *c)
{
	if (c == NULL)
		return;
	free(c->buf);
	free(c->offs);
	free(c->fields);
	free(c);
}

size_t csv_offset(const struct csv *c)
{
	return c->pos;
}

static int put(struct csv *c, char ch)
{
	if (c->blen == c->bcap) {
		size_t nc = c->bcap ? c->bcap * 2 : 256;
		char *nb = realloc(c->buf, nc);
		if (nb == NULL)
			return -1;
		c->buf = nb;
		c->bcap = nc;
	}
	c->buf[c->blen++] = ch;
	return 0;
}

static int field_start(struct csv *c)
{
	if (c->nf == c->fcap) {
		size_t nc = c->fcap ? c->fcap * 2 : 16;
		size_t *no = realloc(c->offs, nc * sizeof *no);
		if (no == NULL)
			return -1;
		c->offs = no;
		char **nfp = realloc(c->fields, nc * sizeof *nfp);
		if (nfp == NULL)
			return -1;
		c->fields = nfp;
		c->fcap = nc;
	}
	c->offs[c->nf++] = c->blen;
	return 0;
}

/* Stop for good after an error: the rest of the input is not read. */
static int fail(struct csv *c, long *line_out, char *err, size_t errlen, long line, const char *what)
{
	fg_seterr(err, errlen, "%s", what);
	*line_out = line;
	c->pos = c->len;
	return -1;
}

/* At a record's end (LF, CRLF or the end of the input) consume it and
 * return 1; at a comma consume it and return 0; else return -1 without
 * consuming anything. */
static int at_separator(struct csv *c)
{
	if (c->pos >= c->len)
		return 1;
	char ch = c->data[c->pos];
	if (ch == ',') {
		c->pos++;
		return 0;
	}
	if (ch == '\n' || (ch == '\r' && c->pos + 1 < c->len && c->data[c->pos + 1] == '\n')) {
		c->pos += ch == '\r' ? 2 : 1;
		c->line++;
		return 1;
	}
	return -1;
}

int csv_next(struct csv *c, char ***fields, size_t *nfields, long *line, char *err, size_t errlen)
{
	/* empty lines between records are skipped */
	for (;;) {
		if (c->pos >= c->len)
			return 0;
		if (c->data[c->pos] == '\n') {
			c->pos++;
			c->line++;
		} else if (c->data[c->pos] == '\r' && c->pos + 1 < c->len && c->data[c->pos + 1] == '\n') {
			c->pos += 2;
			c->line++;
		} else {
			break;
		}
	}
	long start = c->line;
	*line = start;
	c->blen = 0;
	c->nf = 0;
	for (;;) {   /* one field per turn */
		int end;
		if (field_start(c) != 0)
			goto oom;
		if (c->pos < c->len && c->data[c->pos] == '"') {
			long qline = c->line;
			c->pos++;
			for (;;) {
				if (c->pos >= c->len)
					return fail(c, line, err, errlen, qline,
						    "a quoted field starts here and is never closed; end it with a double quote (write a quote inside it as \"\")");
				char ch = c->data[c->pos];
				if (ch == '"') {
					if (c->pos + 1 < c->len && c->data[c->pos + 1] == '"') {
						if (put(c, '"') != 0)
							goto oom;
						c->pos += 2;
						continue;
					}
					c->pos++;
					break;
				}
				if (ch == '\0')
					return fail(c, line, err, errlen, c->line, "a NUL byte; this is not a text file");
				if (ch == '\n')
					c->line++;
				if (put(c, ch) != 0)
					goto oom;
				c->pos++;
			}
			end = at_separator(c);
			if (end < 0)
				return fail(c, line, err, errlen, c->line,
					    "text after the closing quote of a quoted field; a quote inside a quoted field must be written twice (\"\")");
		} else {
			for (;;) {
				end = at_separator(c);
				if (end >= 0)
					break;
				char ch = c->data[c->pos];
				if (ch == '"')
					return fail(c, line, err, errlen, c->line,
						    "a double quote inside an unquoted field; enclose the whole field in double quotes and write the quote twice (\"\")");
				if (ch == '\r')
					return fail(c, line, err, errlen, c->line,
						    "a carriage return not followed by a line feed; save the file with LF or CRLF line endings");
				if (ch == '\0')
					return fail(c, line, err, errlen, c->line, "a NUL byte; this is not a text file");
				if (put(c, ch) != 0)
					goto oom;
				c->pos++;
			}
		}
		if (put(c, '\0') != 0)
			goto oom;
		if (end == 1)
			break;
	}
	for (size_t i = 0; i < c->nf; i++)
		c->fields[i] = c->buf + c->offs[i];
	*fields = c->fields;
	*nfields = c->nf;
	*line = start;
	return 1;
oom:
	return fail(c, line, err, errlen, c->line, "out of memory");
}
