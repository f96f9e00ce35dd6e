// Types for spec-validator.mjs (plain JS so the double's processes start without tsx).
export interface SpecOperation {
  parameters?: { name: string; in: string; required?: boolean; schema?: unknown }[];
}
export class Spec {
  constructor(file: string);
  route(method: string, path: string): { error: string } | { error?: undefined; template: string; op: SpecOperation; params: Record<string, string> };
  validateBody(op: SpecOperation, body: unknown, hasBody: boolean): string[];
  validateParams(op: SpecOperation, params: Record<string, string>): string[];
  validate(schema: unknown, value: unknown, where: string): string[];
}
