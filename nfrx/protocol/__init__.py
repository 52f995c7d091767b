"""The sans-I/O tunnel protocol: frames, their encoding, and the connection state machine.

This package does no I/O and imports neither trio, nor any WebSocket library, nor httpx (a test
enforces it), so it is tested synchronously by wiring two connections together.
"""

from __future__ import annotations

from nfrx.protocol.codec import decode as decode
from nfrx.protocol.codec import encode as encode
from nfrx.protocol.connection import TunnelConnection as TunnelConnection
from nfrx.protocol.errors import LocalProtocolError as LocalProtocolError
from nfrx.protocol.errors import ProtocolError as ProtocolError
from nfrx.protocol.errors import RemoteProtocolError as RemoteProtocolError
from nfrx.protocol.frames import PROTOCOL_VERSION as PROTOCOL_VERSION
from nfrx.protocol.frames import Credit as Credit
from nfrx.protocol.frames import Data as Data
from nfrx.protocol.frames import Drain as Drain
from nfrx.protocol.frames import Frame as Frame
from nfrx.protocol.frames import Goodbye as Goodbye
from nfrx.protocol.frames import Headers as Headers
from nfrx.protocol.frames import Hello as Hello
from nfrx.protocol.frames import Load as Load
from nfrx.protocol.frames import Members as Members
from nfrx.protocol.frames import Open as Open
from nfrx.protocol.frames import Ping as Ping
from nfrx.protocol.frames import Pong as Pong
from nfrx.protocol.frames import Refuse as Refuse
from nfrx.protocol.frames import Reset as Reset
from nfrx.protocol.frames import ResetCode as ResetCode
from nfrx.protocol.frames import Response as Response
from nfrx.protocol.frames import Status as Status
from nfrx.protocol.frames import Welcome as Welcome
from nfrx.protocol.state import Role as Role
