/** Human-readable lines for chat commands: Korean for `ko` commands, English for `en`. */

export type Lang = 'en' | 'ko';

export type FindResult = { name: string; online: boolean; channel?: number };

export function findText(lang: Lang, result: FindResult): string {
  const { name, online, channel } = result;
  if (lang === 'ko') {
    if (!online) return `${name}님을 찾을 수 없습니다.`;
    return channel === undefined ? `${name}님은 접속 중입니다.` : `${name}님은 ${channel}채널에 있습니다.`;
  }
  if (!online) return `${name} is not online.`;
  return channel === undefined ? `${name} is online.` : `${name} is on channel ${channel}.`;
}

export function channelText(lang: Lang, channel: number): string {
  return lang === 'ko' ? `${channel}채널로 이동했습니다.` : `Moved to channel ${channel}.`;
}

export function whisperSentText(lang: Lang, to: string): string {
  return lang === 'ko' ? `${to}님에게 귓속말을 보냈습니다.` : `Whisper sent to ${to}.`;
}

/** Usage line for a known command given bad arguments. */
export function usageText(lang: Lang, command: 'find' | 'whisper' | 'channel'): string {
  if (lang === 'ko') {
    switch (command) {
      case 'find':
        return '사용법: /찾기 이름';
      case 'whisper':
        return '사용법: /귓속말 이름 메시지';
      case 'channel':
        return '사용법: /채널 번호';
    }
  }
  switch (command) {
    case 'find':
      return 'usage: /find NAME';
    case 'whisper':
      return 'usage: /w NAME MESSAGE';
    case 'channel':
      return 'usage: /channel N';
  }
}

export function unknownCommandText(lang: Lang, command: string): string {
  return lang === 'ko' ? `알 수 없는 명령어입니다: ${command}` : `unknown command: ${command}`;
}

export function badNameText(lang: Lang): string {
  return lang === 'ko'
    ? '이름은 1-24자의 문자, 숫자 또는 _여야 합니다.'
    : 'NAME must be 1-24 letters, digits or _.';
}

export function badChannelText(lang: Lang): string {
  return lang === 'ko' ? '채널 번호는 양의 정수여야 합니다.' : 'N must be a positive integer.';
}
