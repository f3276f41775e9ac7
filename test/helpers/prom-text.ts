/**
 * A strict reader of the Prometheus text exposition format (version 0.0.4), written apart
 * from prom-client so that the tests check the text a scraper gets, not the library's view.
 * Throws on any line a Prometheus server would refuse.
 */

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface Family {
  readonly name: string;
  type: string;
  help: string;
  readonly samples: Sample[];
}

const METRIC = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);
const SUFFIXES: Record<string, readonly string[]> = { histogram: ['_bucket', '_sum', '_count'], summary: ['_sum', '_count', ''] };

/** A float as Prometheus reads it (Go's strconv.ParseFloat: NaN and Inf in any case, prom-client writes `Nan`). */
function parseValue(text: string, line: number): number {
  if (/^[+]?inf(inity)?$/i.test(text)) return Infinity;
  if (/^-inf(inity)?$/i.test(text)) return -Infinity;
  if (/^nan$/i.test(text)) return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`line ${line}: bad value ${JSON.stringify(text)}`);
  return Number(text);
}

function parseLabels(text: string, line: number): Record<string, string> {
  const labels: Record<string, string> = {};
  let i = 0;
  while (i < text.length) {
    const eq = text.indexOf('=', i);
    if (eq < 0) throw new Error(`line ${line}: label without '=' in {${text}}`);
    const name = text.slice(i, eq).trim();
    if (!LABEL.test(name)) throw new Error(`line ${line}: bad label name ${JSON.stringify(name)}`);
    if (name in labels) throw new Error(`line ${line}: label ${name} twice`);
    if (text[eq + 1] !== '"') throw new Error(`line ${line}: label ${name} value not quoted`);
    let j = eq + 2;
    let value = '';
    for (;;) {
      if (j >= text.length) throw new Error(`line ${line}: unterminated label value of ${name}`);
      const c = text[j]!;
      if (c === '\\') {
        const n = text[j + 1];
        if (n === '\\') value += '\\';
        else if (n === '"') value += '"';
        else if (n === 'n') value += '\n';
        else throw new Error(`line ${line}: bad escape \\${n ?? ''} in label ${name}`);
        j += 2;
      } else if (c === '"') {
        j++;
        break;
      } else {
        value += c;
        j++;
      }
    }
    labels[name] = value;
    if (j < text.length) {
      if (text[j] !== ',') throw new Error(`line ${line}: expected ',' after label ${name}`);
      j++;
    }
    i = j;
  }
  return labels;
}

/** Parses a whole exposition; families by name, in order of appearance. */
export function parsePrometheusText(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const lines = text.split('\n');
  if (lines[lines.length - 1] !== '') throw new Error('exposition does not end with a newline');
  const familyOf = (sample: string): Family | undefined => {
    const exact = families.get(sample);
    if (exact) return exact;
    for (const f of families.values()) {
      for (const s of SUFFIXES[f.type] ?? []) if (s && sample === f.name + s) return f;
    }
    return undefined;
  };
  lines.forEach((raw, k) => {
    const n = k + 1;
    const line = raw.trim();
    if (line === '') return;
    if (line.startsWith('#')) {
      const m = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s+(.*))?$/.exec(line);
      if (!m) return; // a plain comment
      const [, what, name, rest = ''] = m;
      if (!METRIC.test(name!)) throw new Error(`line ${n}: bad metric name ${name}`);
      const f = families.get(name!) ?? { name: name!, type: 'untyped', help: '', samples: [] };
      if (what === 'TYPE') {
        if (!TYPES.has(rest)) throw new Error(`line ${n}: bad type ${rest}`);
        if (f.samples.length > 0) throw new Error(`line ${n}: TYPE of ${name} after its samples`);
        f.type = rest;
      } else f.help = rest;
      families.set(name!, f);
      return;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+-?\d+)?$/.exec(line);
    if (!m) throw new Error(`line ${n}: not a sample: ${JSON.stringify(line)}`);
    const [, name, , labelText = '', value] = m;
    const labels = parseLabels(labelText, n);
    let f = familyOf(name!);
    if (!f) {
      f = { name: name!, type: 'untyped', help: '', samples: [] };
      families.set(name!, f);
    }
    const key = JSON.stringify([name, Object.entries(labels).sort()]);
    if (f.samples.some((s) => JSON.stringify([s.name, Object.entries(s.labels).sort()]) === key)) throw new Error(`line ${n}: duplicate sample ${name}${JSON.stringify(labels)}`);
    f.samples.push({ name: name!, labels, value: parseValue(value!, n) });
  });
  return families;
}

/** The value of one sample whose labels include `labels`; undefined when there is none. */
export function sampleValue(families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const f of families.values()) {
    for (const s of f.samples) {
      if (s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) return s.value;
    }
  }
  return undefined;
}
