import type { Lang } from '../protocol/texts';

/**
 * The client's own lines, in Korean and English (`--lang`). Replies the server words itself
 * (a `/찾기` answer, a usage line) are shown as the server sent them: their language follows
 * the command word, as docs/protocol.md says.
 */

export type { Lang };

/** `ko` when LC_ALL, LC_MESSAGES or LANG (the first one set, as POSIX orders them) starts with `ko`. */
export function langFromEnv(env: NodeJS.ProcessEnv): Lang {
  const locale = env.LC_ALL || env.LC_MESSAGES || env.LANG || '';
  return /^ko([_.@-]|$)/i.test(locale) ? 'ko' : 'en';
}

const seconds = (ms: number): string => (ms / 1000).toFixed(1);

/** One sentence per wire error code of docs/protocol.md; `{name}` is the character. */
const ERROR_SENTENCES: Record<Lang, Record<string, string>> = {
  en: {
    BAD_FRAME: 'the server could not read what this client sent and closed the connection',
    BAD_REQUEST: 'the server refused the request as malformed',
    NOT_LOGGED_IN: 'not logged in yet: wait for the login to finish',
    ALREADY_LOGGED_IN: 'this connection has a character already',
    NAME_TAKEN: '{name} is online already (on another connection): pick another name, or wait until it goes offline',
    NOT_FOUND: 'that character is not online',
    UNKNOWN_COMMAND: 'unknown command: /help lists the commands',
    RATE_LIMITED: 'too many messages at once: slow down',
    TIMEOUT: 'the server did not answer in time: try again',
    UNAVAILABLE: 'the server is busy or restarting: try again shortly',
    INTERNAL: 'the server had an internal error: try again',
  },
  ko: {
    BAD_FRAME: '서버가 이 클라이언트가 보낸 데이터를 읽지 못해 연결을 끊었습니다',
    BAD_REQUEST: '서버가 잘못된 요청이라며 거절했습니다',
    NOT_LOGGED_IN: '아직 로그인되지 않았습니다. 로그인이 끝날 때까지 기다리세요',
    ALREADY_LOGGED_IN: '이 연결에는 이미 캐릭터가 있습니다',
    NAME_TAKEN: '{name}: 이미 다른 곳에서 접속 중인 이름입니다. 다른 이름을 쓰거나 접속이 끝날 때까지 기다리세요',
    NOT_FOUND: '접속 중이 아닌 캐릭터입니다',
    UNKNOWN_COMMAND: '알 수 없는 명령어입니다. /도움말 로 명령어를 볼 수 있습니다',
    RATE_LIMITED: '너무 빠르게 보내고 있습니다. 천천히 보내세요',
    TIMEOUT: '서버가 제때 응답하지 않았습니다. 다시 시도하세요',
    UNAVAILABLE: '서버가 바쁘거나 재시작 중입니다. 잠시 후 다시 시도하세요',
    INTERNAL: '서버 내부 오류입니다. 다시 시도하세요',
  },
};

/**
 * Codes whose server message is itself the clearest sentence: it names what was wrong
 * (`사용법: /찾기 이름`, `Bob is not online`) in the language of the command typed.
 */
const SERVER_WORDED = new Set(['BAD_REQUEST', 'UNKNOWN_COMMAND', 'NOT_FOUND']);

/** `! sentence (CODE)`: an error reply or push made readable. */
export function errorLine(lang: Lang, code: string, serverMessage: string, name: string): string {
  const known = ERROR_SENTENCES[lang][code];
  if (known === undefined) return `! ${lang === 'ko' ? '오류' : 'error'}: ${serverMessage} (${code})`;
  const sentence = SERVER_WORDED.has(code) && serverMessage !== '' ? serverMessage : known.replace('{name}', name);
  return `! ${sentence} (${code})`;
}

/** The error push that precedes a close (docs/protocol.md, "pushes"): why the server hung up. */
export function closingPushLine(lang: Lang, code: string, serverMessage: string): string {
  if (code === 'UNAVAILABLE' && /shutting down/.test(serverMessage)) {
    return lang === 'ko' ? '! 서버가 종료되는 중입니다 (UNAVAILABLE)' : '! the server is shutting down (UNAVAILABLE)';
  }
  if (code === 'UNAVAILABLE' && /server full/.test(serverMessage)) {
    return lang === 'ko' ? '! 서버가 꽉 찼습니다 (UNAVAILABLE)' : '! the server is full (UNAVAILABLE)';
  }
  if (code === 'TIMEOUT' && /^idle/.test(serverMessage)) {
    return lang === 'ko' ? '! 오래 입력이 없어 서버가 연결을 끊었습니다 (TIMEOUT)' : '! the server closed the idle connection (TIMEOUT)';
  }
  return lang === 'ko' ? `! 서버가 연결을 끊습니다: ${serverMessage} (${code})` : `! the server is closing the connection: ${serverMessage} (${code})`;
}

export const texts = {
  en: {
    channelLabel: (n: number) => `channel ${n}`,
    whisperFrom: 'whisper',
    whisperTo: (to: string) => `whisper → ${to}`,
    connecting: (addr: string) => `* connecting to ${addr}`,
    loggedIn: (name: string, channel: number, addr: string) => `* logged in as ${name} on channel ${channel} (${addr}); /help lists the commands`,
    reconnected: (name: string, channel: number) => `* reconnected as ${name} on channel ${channel}`,
    refused: (addr: string, ms: number) => `! the server at ${addr} is down (connection refused); retrying in ${seconds(ms)} s`,
    unreachable: (addr: string, why: string, ms: number) => `! cannot reach ${addr} (${why}); retrying in ${seconds(ms)} s`,
    lost: (addr: string, ms: number) => `! connection to ${addr} lost; reconnecting in ${seconds(ms)} s`,
    loginRetry: (code: string, ms: number) => `! login refused for now (${code}); retrying in ${seconds(ms)} s`,
    unanswered: (n: number) => `! ${n} request(s) sent before the connection was lost got no answer; they may or may not have taken effect`,
    givingUp: (n: number) => `! giving up after ${n} failed connection attempt(s)`,
    queued: '* not connected: the line will be sent once logged in again',
    queueFull: '! not connected and too many lines waiting: line dropped',
    tooLong: (n: number) => `! the line is ${n} characters long; the limit is 500: not sent`,
    noAnswer: (line: string, s: number) => `! no answer from the server within ${s} s: ${line}`,
    pong: (ms: number) => `* pong (${ms} ms)`,
    bye: '* bye',
    loginFailed: (sentence: string) => `chat client: login failed: ${sentence}`,
    help: [
      '* commands (Korean or English words):',
      '*   TEXT                     say TEXT in your channel (start it with a space to say a line beginning with /)',
      '*   /find NAME   /찾기 NAME   which channel is NAME on?',
      '*   /w NAME TEXT /whisper NAME TEXT /귓속말 NAME TEXT   whisper to NAME',
      '*   /channel N   /채널 N      move to channel N',
      '*   /ping        /핑          round trip to the server',
      '*   /help        /도움말      this list',
      '*   /quit        /종료        log out and leave (also Ctrl-D)',
    ],
  },
  ko: {
    channelLabel: (n: number) => `${n}채널`,
    whisperFrom: '귓속말',
    whisperTo: (to: string) => `귓속말 → ${to}`,
    connecting: (addr: string) => `* ${addr}에 연결하는 중`,
    loggedIn: (name: string, channel: number, addr: string) => `* 접속했습니다: ${name}, ${channel}채널 (${addr}). 명령어는 /도움말`,
    reconnected: (name: string, channel: number) => `* 다시 접속했습니다: ${name}, ${channel}채널`,
    refused: (addr: string, ms: number) => `! 서버(${addr})가 꺼져 있습니다 (연결 거부, connection refused). ${seconds(ms)}초 후 다시 시도합니다`,
    unreachable: (addr: string, why: string, ms: number) => `! 서버(${addr})에 연결할 수 없습니다 (${why}). ${seconds(ms)}초 후 다시 시도합니다`,
    lost: (addr: string, ms: number) => `! 서버(${addr}) 연결이 끊어졌습니다. ${seconds(ms)}초 후 다시 연결합니다`,
    loginRetry: (code: string, ms: number) => `! 지금은 로그인할 수 없습니다 (${code}). ${seconds(ms)}초 후 다시 시도합니다`,
    unanswered: (n: number) => `! 연결이 끊기기 전에 보낸 요청 ${n}개의 응답을 받지 못했습니다. 처리되었는지 알 수 없습니다`,
    givingUp: (n: number) => `! 연결을 ${n}번 실패해 포기합니다`,
    queued: '* 연결되어 있지 않습니다. 다시 로그인하면 보냅니다',
    queueFull: '! 연결되어 있지 않고 기다리는 줄이 너무 많습니다. 이 줄은 버립니다',
    tooLong: (n: number) => `! ${n}자입니다. 500자까지 보낼 수 있습니다. 보내지 않았습니다`,
    noAnswer: (line: string, s: number) => `! ${s}초 안에 서버 응답이 없습니다: ${line}`,
    pong: (ms: number) => `* 퐁 (${ms} ms)`,
    bye: '* 종료합니다',
    loginFailed: (sentence: string) => `chat client: 로그인 실패: ${sentence}`,
    help: [
      '* 명령어 (한국어나 영어):',
      '*   글               지금 채널에 말하기 (/로 시작하는 글은 앞에 공백을 넣어 말합니다)',
      '*   /찾기 이름       /find NAME    이름이 몇 채널에 있는지 찾기',
      '*   /귓속말 이름 글  /w NAME TEXT  귓속말 보내기',
      '*   /채널 번호       /channel N    채널 이동',
      '*   /핑              /ping         서버 응답 시간',
      '*   /도움말          /help         이 목록',
      '*   /종료            /quit         로그아웃하고 나가기 (Ctrl-D도 됩니다)',
    ],
  },
} as const;

export type ClientTexts = (typeof texts)[Lang];
