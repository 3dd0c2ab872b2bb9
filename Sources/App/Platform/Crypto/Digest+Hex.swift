import Crypto
import StewardFormats

extension Digest {
    var hexString: String { Array(self).hexString }
}
