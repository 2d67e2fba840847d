/** Every coordinator API response carries this header: a server without it is not a Chorus coordinator. */
export const CHORUS_HEADER = 'x-chorus-api'
