// `regmirror events`: what the mirror told its operators (stale tags served in an outage,
// upstreams sending the wrong bytes, pinned content it could not evict, refused images),
// newest first, read from the data dir's metadata or from a running server (--server).
import { loadConfig } from '../config.js';
import { eventView, formatEvents, parseAge, parseKinds, type EventView } from '../events/view.js';
import { ArgumentError, configPath, serverOrigin, type Values } from './args.js';
import { askServer } from './cache-remote.js';
import { noCacheYet, openMetadata } from './context.js';
import { noCacheLine } from './status.js';

/** Rows shown at most; the newest. */
const LIMIT = 1000;

export async function eventsCommand(values: Values, args: string[]): Promise<number> {
  if (args.length > 0) throw new ArgumentError(`regmirror events: unexpected argument ${JSON.stringify(args[0])} (see regmirror events --help)`);
  const since = sinceOf(values.since);
  let kinds: string[] = [];
  try {
    kinds = values.kind === undefined ? [] : parseKinds(values.kind);
  } catch (err) {
    throw new ArgumentError(`regmirror events: --kind: ${(err as Error).message}`);
  }
  const events = values.server !== undefined ? await fromServer(serverOrigin(values.server, 'events'), since, kinds) : await fromDataDir(values, since, kinds);
  if (events === undefined) return 0;
  if (values.json) console.log(JSON.stringify(events, null, 2));
  else console.log(events.length === 0 ? 'no events' : formatEvents(events));
  return 0;
}

function sinceOf(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const age = parseAge(value);
  if (age === undefined) throw new ArgumentError(`regmirror events: --since ${value}: give an age such as 30m, 1h or 7d`);
  return Date.now() - age;
}

async function fromServer(server: string, since: number | undefined, kinds: string[]): Promise<EventView[]> {
  const q = new URLSearchParams({ limit: String(LIMIT) });
  if (since !== undefined) q.set('since', String(since));
  if (kinds.length) q.set('kind', kinds.join(','));
  return askServer<EventView[]>(server, 'events', `/_regmirror/events?${q}`);
}

/** The data dir's events; undefined (after saying so) when no mirror has used it yet. */
async function fromDataDir(values: Values, since: number | undefined, kinds: string[]): Promise<EventView[] | undefined> {
  const config = loadConfig(configPath(values), process.env, { secrets: 'storage' });
  if (noCacheYet(config)) {
    if (values.json) console.log('[]');
    (values.json ? console.error : console.log)(noCacheLine(config));
    return undefined;
  }
  const metadata = await openMetadata(config);
  try {
    return (await metadata.events.list({ ...(since === undefined ? {} : { since }), kinds, limit: LIMIT })).map(eventView);
  } finally {
    await metadata.close();
  }
}
