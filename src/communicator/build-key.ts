/** The build key's name: how kiln recognizes the keys it generated, in a guest's authorized_keys. */

/** Every generated build key carries this comment (plus the build's name), so images never keep one. */
export const buildKeyCommentPrefix = 'kiln-build-';
