/*
 * log.c: the fleetgate log module (see fg_log.h). Its settings are the
 * module's own state, written at start-up and read by every thread.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>
#include <systemd/sd-journal.h>
#include <time.h>
#include <unistd.h>

#include "fg_log.h"

static struct {
	char progname[64];
	enum fg_log_level level;
	enum fg_log_format format;
	int syslog_open;
} lg = { "fleetgate", FG_LOG_INFO, FG_LOG_TEXT, 0 };

static const char *const level_names[FG_LOG_LEVEL_MAX] = { "error", "warn", "info", "debug" };

void fg_log_init(const char *progname, enum fg_log_level level, enum fg_log_format format)
{
	snprintf(lg.progname, sizeof lg.progname, "%s", progname ? progname : "fleetgate");
	lg.level = level < FG_LOG_LEVEL_MAX ? level : FG_LOG_INFO;
	lg.format = format < FG_LOG_FORMAT_MAX ? format : FG_LOG_TEXT;
	if (lg.format == FG_LOG_SYSLOG && !lg.syslog_open) {
		openlog(lg.progname, LOG_PID, LOG_DAEMON);
		lg.syslog_open = 1;
	}
}

void fg_log_stderr_only(void)
{
	if (lg.format == FG_LOG_SYSLOG || lg.format == FG_LOG_JOURNAL)
		lg.format = FG_LOG_TEXT;
}

int fg_log_stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat sb;
	char tail;
	if (js == NULL || sscanf(js, "%llu:%llu%c", &dev, &ino, &tail) != 2 || fstat(STDERR_FILENO, &sb) != 0)
		return 0;
	return (unsigned long long)sb.st_dev == dev && (unsigned long long)sb.st_ino == ino;
}

/* One journal entry: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER and the fields. */
static void journal_send(enum fg_log_level level, const char *component, const char *request_id,
			 const struct fg_log_fields *f, const char *msg)
{
	static const char prio[FG_LOG_LEVEL_MAX] = { '3', '4', '6', '7' };
	char m[2100], p[16], id[80], c[80], r[80], d[160], sn[120];
	struct iovec iov[7];
	int n = 0;
#define FIELD(buf, ...)                                                         \
	do {                                                                    \
		int w_ = snprintf(buf, sizeof buf, __VA_ARGS__);                \
		iov[n].iov_base = buf;                                          \
		iov[n].iov_len = w_ < 0 ? 0 : (size_t)w_ < sizeof buf ? (size_t)w_ : sizeof buf - 1; \
		n++;                                                            \
	} while (0)
	FIELD(m, "MESSAGE=%s%s%s%s %s", component, request_id ? " [" : "", request_id ? request_id : "",
	      request_id ? "]" : "", msg);
	FIELD(p, "PRIORITY=%c", prio[level]);
	FIELD(id, "SYSLOG_IDENTIFIER=%s", lg.progname);
	FIELD(c, "FLEETGATE_COMPONENT=%s", component);
	if (request_id)
		FIELD(r, "REQUEST_ID=%s", request_id);
	if (f && f->device)
		FIELD(d, "DEVICE=%s", f->device);
	if (f && f->serial)
		FIELD(sn, "SERIAL=%s", f->serial);
#undef FIELD
	if (sd_journal_sendv(iov, n) < 0) {
		/* No journal to take it: the line goes to stderr, as text. */
		char line[2200];
		int w = snprintf(line, sizeof line, "%s %s\n", level_names[level], (char *)iov[0].iov_base + 8);
		ssize_t wr = write(STDERR_FILENO, line, w < 0 ? 0 : (size_t)w < sizeof line ? (size_t)w : sizeof line - 1);
		(void)wr;
	}
}

int fg_log_level_parse(const char *s)
{
	if (s == NULL)
		return -1;
	for (int i = 0; i < FG_LOG_LEVEL_MAX; i++)
		if (strcmp(s, level_names[i]) == 0)
			return i;
	if (strcmp(s, "warning") == 0)
		return FG_LOG_WARN;
	return -1;
}

/* Append s to buf as the inside of a JSON string. */
static size_t json_escape(char *buf, size_t pos, size_t cap, const char *s)
{
	for (; *s && pos + 7 < cap; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			buf[pos++] = '\\';
			buf[pos++] = (char)c;
		} else if (c < 0x20) {
			pos += (size_t)snprintf(buf + pos, cap - pos, "\\u%04x", c);
		} else {
			buf[pos++] = (char)c;
		}
	}
	return pos;
}

static void vlog_with(enum fg_log_level level, const char *component, const char *request_id,
		      const struct fg_log_fields *f, const char *fmt, va_list ap) __attribute__((format(printf, 5, 0)));
static void vlog_with(enum fg_log_level level, const char *component, const char *request_id,
		      const struct fg_log_fields *f, const char *fmt, va_list ap)
{
	char msg[2048], line[4096], ts[32];
	size_t n;

	if (level > lg.level || level >= FG_LOG_LEVEL_MAX)
		return;
	vsnprintf(msg, sizeof msg, fmt, ap);
	if (component == NULL)
		component = "-";

	if (lg.format == FG_LOG_SYSLOG) {
		static const int prio[FG_LOG_LEVEL_MAX] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
		if (request_id)
			syslog(prio[level], "%s [%s] %s", component, request_id, msg);
		else
			syslog(prio[level], "%s %s", component, msg);
		return;
	}
	if (lg.format == FG_LOG_JOURNAL) {
		journal_send(level, component, request_id, f, msg);
		return;
	}

	struct timespec now;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(ts + n, sizeof ts - n, ".%03ldZ", now.tv_nsec / 1000000);

	if (lg.format == FG_LOG_JSON) {
		n = (size_t)snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"component\":\"",
				     ts, level_names[level]);
		n = json_escape(line, n, sizeof line, component);
		if (request_id) {
			n += (size_t)snprintf(line + n, sizeof line - n, "\",\"request_id\":\"");
			n = json_escape(line, n, sizeof line, request_id);
		}
		if (f && f->device) {
			n += (size_t)snprintf(line + n, sizeof line - n, "\",\"device\":\"");
			n = json_escape(line, n, sizeof line, f->device);
		}
		if (f && f->serial) {
			n += (size_t)snprintf(line + n, sizeof line - n, "\",\"serial\":\"");
			n = json_escape(line, n, sizeof line, f->serial);
		}
		n += (size_t)snprintf(line + n, sizeof line - n, "\",\"msg\":\"");
		n = json_escape(line, n, sizeof line, msg);
		n += (size_t)snprintf(line + n, sizeof line - n, "\"}\n");
	} else {
		int w = snprintf(line, sizeof line, "%s %-5s %s%s%s%s %s\n", ts, level_names[level],
				 component, request_id ? " [" : "", request_id ? request_id : "",
				 request_id ? "]" : "", msg);
		n = w < 0 ? 0 : (size_t)w;
	}
	if (n >= sizeof line) {
		n = sizeof line - 1;
		line[n - 1] = '\n';
	}
	/* One write per line: lines from threads never interleave. */
	ssize_t r = write(STDERR_FILENO, line, n);
	(void)r;
}

void fg_vlog(enum fg_log_level level, const char *component, const char *request_id,
	     const char *fmt, va_list ap)
{
	vlog_with(level, component, request_id, NULL, fmt, ap);
}

void fg_log_with(enum fg_log_level level, const char *component, const char *request_id,
		 const struct fg_log_fields *fields, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog_with(level, component, request_id, fields, fmt, ap);
	va_end(ap);
}

void fg_log(enum fg_log_level level, const char *component, const char *request_id,
	    const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fg_vlog(level, component, request_id, fmt, ap);
	va_end(ap);
}
