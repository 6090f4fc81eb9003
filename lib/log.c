/*
 * log.c: the fleetgate log module (see fg_log.h). Its settings are the
 * module's own state, written at start-up and read by every thread.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
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
	if (lg.format == FG_LOG_SYSLOG)
		lg.format = FG_LOG_TEXT;
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

void fg_vlog(enum fg_log_level level, const char *component, const char *request_id,
	     const char *fmt, va_list ap)
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

void fg_log(enum fg_log_level level, const char *component, const char *request_id,
	    const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fg_vlog(level, component, request_id, fmt, ap);
	va_end(ap);
}
