import { pino, type Logger as PinoLogger } from 'pino';
import { traceFields } from './spans.js';

// JSON logs on stdout (journald captures them under systemd). Security
// events also carry `security_event` so they can be filtered and shipped.
// A line logged within a traced RPC carries its `trace_id` and `span_id`.

export type Logger = PinoLogger;

export function createLogger(level: string, instance: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: 'metald', instance },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      mixin: traceFields,
    },
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}
