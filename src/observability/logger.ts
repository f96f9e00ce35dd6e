import { pino, type Logger as PinoLogger } from 'pino';

// JSON logs on stdout (journald captures them under systemd). Security
// events also carry `security_event` so they can be filtered and shipped.

export type Logger = PinoLogger;

export function createLogger(level: string, instance: string, destination?: NodeJS.WritableStream): Logger {
  return pino(
    {
      level,
      base: { service: 'metald', instance },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}
